"""The `mtlue` commands, one module per command; cli.py registers each module's `command`.

A command module imports only click and light modules at the top (`mtlue --help` stays fast);
the library is imported inside the command. Shared options, the torchrun context and the
error -> exit status rule live in `mtlue.commands.options`.
"""
