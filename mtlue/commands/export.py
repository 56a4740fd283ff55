"""`mtlue export`: a source as a clean HDF5 shard store."""

from __future__ import annotations

import os

import click

from mtlue.commands.options import reports_errors


@click.command()
@click.argument("source")
@click.argument("store", type=click.Path(file_okay=False))
@click.option("--shard-size", default=10000, show_default=True, type=click.IntRange(min=1),
              help="Samples per shard file.")
@click.option("--overwrite", is_flag=True, help="Replace an existing store in STORE.")
@click.option("--resume", is_flag=True, help="Finish an interrupted export: keep shards whose sha256 matches.")
@click.option("--seed", type=int, default=None, help="Seed for sources that are generated (e.g. shapes).")
@click.option("--workers", default=None, type=click.IntRange(min=0),
              help="Processes that read/generate images while the main one compresses (0: all in one process) "
                   "[default: 1 for sources of 10,000 samples or more on a multi-core machine, else 0].")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@reports_errors
def export(source, store, shard_size, overwrite, resume, seed, workers, quiet):
    """Write the train and test splits of SOURCE as a clean (unprotected) HDF5 shard store in STORE.

    STORE gets manifest.json, <split>/shard-NNNNN-of-MMMMM.h5 (gzip+shuffle, fletcher32, sha256 in the
    manifest) and <split>.h5, a virtual dataset over the split's shards readable with plain h5py.
    """
    import time

    from mtlue.data import open_source
    from mtlue.store import export_source

    data = open_source(source, seed=seed)
    if workers is None:
        workers = 1 if (os.cpu_count() or 1) > 1 and sum(data.size(s) for s in data.splits()) >= 10000 else 0
    started = time.perf_counter()
    manifest = export_source(data, store, shard_size=shard_size, overwrite=overwrite, resume=resume,
                             progress=not quiet, spec=source, seed=seed, workers=workers)
    parts = [f"{split} {r['count']} samples in {len(r['shards'])} shard{'s' if len(r['shards']) != 1 else ''}"
             for split, r in manifest["splits"].items()]
    click.echo(f"exported {source} -> {store}: {', '.join(parts)}; "
               f"tasks {', '.join(t['name'] for t in manifest['tasks'])} ({time.perf_counter() - started:.1f} s)")


command = export  # registered by cli.py
