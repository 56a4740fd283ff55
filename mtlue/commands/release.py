"""`mtlue release`: a store published as PNG image folder, WebDataset or Parquet."""

from __future__ import annotations

import click

from mtlue.commands.options import reports_errors


@click.command()
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["imagefolder", "webdataset", "parquet"]), default="imagefolder",
              show_default=True, help="imagefolder: PNGs + metadata.csv (Hugging Face `datasets`); webdataset: tar "
                                      "shards; parquet: PNG bytes in Parquet.")
@click.option("--overwrite", is_flag=True, help="Replace an existing release in OUT.")
@reports_errors
def release(store, out, fmt, overwrite):
    """Publish STORE as OUT in a format people load: the stored bytes as PNG (lossless), labels with
    missing ones empty, SHA256SUMS, a dataset card (README.md) and Croissant metadata (croissant.json).

    Never re-encode the release as JPEG or resize it: that removes the protection.
    """
    import time

    from mtlue.release import release_store

    started = time.perf_counter()
    record = release_store(store, out, fmt, overwrite=overwrite)
    counts = ", ".join(f"{split} {info['count']}" for split, info in record["splits"].items())
    click.echo(f"wrote {out} ({fmt}: {counts} samples, README.md, croissant.json, SHA256SUMS; "
               f"{time.perf_counter() - started:.1f} s)")


command = release  # registered by cli.py
