"""`mtlue inspect`: what a store or release holds, its protection record and publishing guidance."""

from __future__ import annotations

import click

from mtlue.commands.options import reports_errors


@click.command("inspect")
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--verify", is_flag=True,
              help="Check every shard's sha256, schema, counts and index ranges; exit 1 naming a bad shard.")
@reports_errors
def inspect_store(store, verify):
    """Show what an mtlue store or release holds: splits, shards, tasks and class balance, protection
    record; warn when images lost protection-relevant fidelity (JPEG files, other sizes)."""
    from mtlue.data import parse_spec
    from mtlue.data.release import fidelity_warnings
    from mtlue.store import verify_store
    from mtlue.store.describe import describe_store

    for line in fidelity_warnings(store):
        click.echo(f"warning: {line}", err=True)
    if parse_spec(store)[0] == "release":
        _inspect_release(store, verify)
        return
    summary = verify_store(store) if verify else None  # before reading labels: a damaged shard is named
    info = describe_store(store)
    h, w, c = info["image_shape"]
    src = info["source"] or {}
    click.echo(f"store        {store}")
    click.echo(f"source       {src.get('spec') or src.get('name') or 'unknown'}")
    click.echo(f"image shape  {h}x{w}x{c} uint8 (H x W x C)")
    protection = info["protection"]
    click.echo("protection" + ("" if protection else "   none (clean export)"))
    for key, value in (protection or {}).items():
        click.echo(f"  {key:<22} {_short_value(value)}")
    if info["verification"]:
        click.echo(f"verification {_short_value(info['verification'])}")
    _echo_guidance(protection, info["verification"])
    click.echo("")
    click.echo(f"{'split':<10}{'samples':>10}{'shards':>8}{'MiB':>10}")
    for split, s in info["splits"].items():
        click.echo(f"{split:<10}{s['samples']:>10}{s['shards']:>8}{s['bytes'] / 2**20:>10.1f}")
    click.echo("")
    click.echo(f"{'task':<18}{'kind':<14}{'split':<8}{'labelled':>9}  balance")
    for task in info["tasks"]:
        if not task["balance"]:
            click.echo(f"{task['name']:<18}{task['kind']:<14}{'-':<8}{'-':>9}  (dense map, not summarised)")
        for split, b in task["balance"].items():
            if "fractions" in b:
                balance = " ".join(f"{k}:{f:.2f}" for k, f in enumerate(b["fractions"]))
            elif "mean" in b:
                balance = f"mean {b['mean']:.3g} std {b['std']:.3g}"
            else:
                balance = "-"
            click.echo(f"{task['name']:<18}{task['kind']:<14}{split:<8}{b['labelled']:>9.0%}  {balance}")
    if summary is not None:
        shards = sum(s["shards"] for s in summary["splits"].values())
        click.echo(f"\nverified     {shards} shards OK ({', '.join(summary['checks'])})")


def _inspect_release(path: str, verify: bool) -> None:
    from mtlue.data.release import ReleaseSource, verify_release

    summary = verify_release(path) if verify else None
    release = ReleaseSource(path)
    h, w, c = release.image_shape
    click.echo(f"release      {path} ({release.format})")
    click.echo(f"image shape  {h}x{w}x{c} uint8 (H x W x C), PNG")
    protection = release.protection
    click.echo("protection" + ("" if protection else "   none (clean)"))
    for key, value in (protection or {}).items():
        click.echo(f"  {key:<22} {_short_value(value)}")
    verification = release.release.get("verification")
    click.echo(f"verification {_short_value(verification) if verification else 'none: run mtlue verify'}")
    _echo_guidance(protection, verification)
    for split in release.splits():
        click.echo(f"{split:<10}{release.size(split):>10} samples")
    if summary is not None:
        click.echo(f"\nverified     {summary['files']} files OK (SHA256SUMS)")


def _echo_guidance(protection, verification) -> None:
    """The publication paths that keep (or cost) this protection (mtlue.release.guidance)."""
    from mtlue.release.guidance import publication_guidance

    lines = publication_guidance(protection, verification)
    if lines:
        click.echo("publishing")
        for line in lines:
            click.echo(f"  - {line}")


def _short_value(value, width: int = 72) -> str:
    """One line for a manifest value: long lists as their length, nested values as truncated JSON."""
    import json

    if isinstance(value, list) and len(value) > 8:
        return f"[{len(value)} items]"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


command = inspect_store  # registered by cli.py
