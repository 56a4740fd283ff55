"""The dataset card (OUT/README.md): what was protected and how, how well it held, and how to publish it.

Generated from the release record, which carries the store manifest's protection and verification.
"""

from __future__ import annotations

import math

# The README's measured digits result, quoted when the store's own verification ran no defense row.
README_JPEG_NOTE = ("On the `digits` demo, re-encoding an MTL-UE (EM base) protected release as JPEG at quality 10 "
                    "took the victim (small_cnn, ew) from 0.26 back to 0.86 retained learnability: the "
                    "protection is gone.")

LOADING = {
    "imagefolder": ('from datasets import load_dataset\n'
                    'ds = load_dataset("imagefolder", data_dir="OUT", split="train")'),
    "webdataset": ('import webdataset as wds\n'
                   'ds = wds.WebDataset("OUT/train/shard-{000000..%06d}.tar").decode("pil")'),
    "parquet": ('from datasets import load_dataset\n'
                'ds = load_dataset("parquet", data_dir="OUT", split="train")'),
}


def dataset_card(release: dict) -> str:
    """Markdown with a Hugging Face YAML header; every number comes from the release record."""
    source = release.get("source") or {}
    name = source.get("name") or "dataset"
    protection, verification = release.get("protection"), release.get("verification")
    title = f"{name} ({'mtlue-protected' if protection else 'mtlue export, unprotected'})"
    parts = [
        "---", f"pretty_name: {_yaml_text(title)}", "tags:", "- mtlue", "- unlearnable-examples",
        "- multi-task-learning", "---", "", f"# {title}", "",
        _summary(release), "",
        "## Protection", "", *_protection(release), "",
        "## Verification", "", *_verification(verification), "", *_budget(release.get("budget")),
        "## Threat model", "", *_threat_model(protection), "",
        "## Publishing rules", "", *_publishing_rules(release), "",
        "## Tasks", "", "| task | kind | classes |", "|---|---|---|",
        *[f"| {t['name']} | {t['kind']} | {t['num_classes']} |" for t in release["tasks"]], "",
        "Labels missing from the store are missing here too: an empty cell in metadata.csv, null in JSON "
        "and Parquet.", "",
        "## Files and loading", "", *_files(release), "",
    ]
    return "\n".join(parts)


def _yaml_text(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _summary(release: dict) -> str:
    h, w, c = release["image_shape"]
    splits = ", ".join(f"{split}: {record['count']}" for split, record in release["splits"].items())
    tasks = ", ".join(t["name"] for t in release["tasks"])
    return (f"{h}×{w} {'grayscale' if c == 1 else 'RGB'} PNG images ({splits}) with {len(release['tasks'])} "
            f"task label(s) per image ({tasks}), released by mtlue as `{release['format']}`. The pixels are "
            f"exactly those of the mtlue store (manifest sha256 `{release['store_manifest_sha256'][:16]}…`).")


def _protection(release: dict) -> list:
    protection = release.get("protection")
    if not protection:
        return ["**Not protected.** The store carries no protection record: these are the images as exported. "
                "Publishing them gives no protection at all."]
    epsilon = protection.get("epsilon")
    units = protection.get("epsilon_units", "1/255")
    budget = f"{epsilon:g}/255" if units == "1/255" and epsilon is not None else f"{epsilon} {units}"
    rows = [("method", protection.get("method")), ("base", protection.get("base") or "–"),
            ("ε (budget)", "–" if epsilon is None else
             f"{budget}: every stored pixel within {math.floor(epsilon):g} grey levels of the original "
             f"({protection.get('norm') or 'linf'} perturbation)"),
            ("seed", protection.get("seed")), ("poison rate", protection.get("poison_rate")),
            ("protected tasks", ", ".join(protection.get("protected_tasks") or []) or "–"),
            ("split protected", protection.get("split", "train")),
            ("apply rule", protection.get("apply_rule", "–"))]
    eot = protection.get("augment") or (protection.get("config") or {}).get("augment")
    if eot and eot != "none":
        rows.append(("EOT augmentation", f"{eot} (the generator was trained through the attacker's augmentation)"))
    software = {**(protection.get("software") or {}), **release.get("software", {})}
    rows.append(("software", ", ".join(f"{k} {v}" for k, v in software.items())))
    return ["| | |", "|---|---|", *[f"| {k} | {_cell(v)} |" for k, v in rows]]


def _cell(value) -> str:
    return "–" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def _verification(verification: dict | None) -> list:
    if not verification:
        return ["> **Not verified: run `mtlue verify`.** Nobody has measured whether a model trained on these "
                "images learns less than one trained on the clean data. Do not rely on the protection until the "
                "store has a verification (`mtlue verify STORE --clean SOURCE`) and the release is regenerated."]
    rules = verification.get("rules") or {}
    lines = [f"**Verdict: {verification.get('verdict')}.** {verification.get('reason') or ''}".rstrip(), "",
             f"Retained learnability: 0 means a victim trained on this release learned nothing beyond chance, "
             f"1 as much as from clean data. A group holds when its worst seed is ≤ "
             f"{rules.get('max_learnability', 0.2):g}; only no-defense groups decide the verdict, defense rows "
             f"show what an attacker who pre-processes the release gets back.", "",
             "| profile | weighting | defense | seeds | worst | best | holds | in verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for g in verification.get("groups") or []:
        holds = {True: "yes", False: "**no**", None: "–"}[g.get("holds")]
        lines.append(f"| {g['profile']} | {g['weighting']} | {g['defense']} | "
                     f"{', '.join(str(s) for s in g.get('seeds') or [])} | {_fmt(g.get('worst_learnability'))} | "
                     f"{_fmt(g.get('best_learnability'))} | {holds} | {'yes' if g.get('in_verdict') else 'no'} |")
    profiles = verification.get("profiles") or {}
    if profiles:
        lines += ["", "Attacker profiles covered:", *[f"- `{k}`: {v}" for k, v in profiles.items()]]
    not_run = verification.get("not_run") or []
    if not_run:
        lines += ["", "Not tested (the verdict says nothing about these):", *[f"- {line}" for line in not_run]]
    if verification.get("verified"):
        lines += ["", f"Verified {verification['verified']}."]
    return lines


def _budget(measured: dict | None) -> list:
    """Where the release's ε falls on a measured budget curve (`mtlue budget`), when one was measured."""
    if not measured:
        return []
    rows = [f"| {c[0]} | {_fmt(c[1])} | {c[2]} |" for c in measured.get("curve") or []]
    smallest = measured.get("smallest_passing_epsilon")
    need = (f"The smallest listed ε that passes is {smallest}/255." if smallest is not None
            else "No listed ε passes.")
    return ["## Budget", "", f"This release uses ε = {measured.get('epsilon')}/255. Measured curve for "
            f"{measured.get('source')} ({measured.get('method')}): worst retained learnability per ε. {need}", "",
            "| ε (/255) | worst retained learnability | verdict |", "|---|---|---|", *rows, ""]


def _threat_model(protection: dict | None) -> list:
    if not protection:
        return ["There is no protection: anyone can train on these images as on the original data."]
    return ["The images carry a small, deliberately crafted perturbation (at most the ε above per pixel) meant "
            "to make a model trained on them learn shortcuts instead of the tasks, so unauthorised training "
            "yields a model that does poorly on real images. It protects against someone who downloads this "
            "release and trains on it as published. It does not hide the images (people can still see them), "
            "does not protect the clean originals, and does not survive an attacker who re-encodes, "
            "filters or resizes the images, trains in a way the verification did not cover, or has clean "
            "data of their own. The verification above lists what was measured; anything else is unknown."]


def _publishing_rules(release: dict) -> list:
    lines = ["- **Keep PNG.** Publish the files exactly as written here; check them with `sha256sum -c SHA256SUMS`.",
             "- **Never re-encode to JPEG** (or WebP, or any lossy format), not even for thumbnails that can be "
             "downloaded: lossy compression removes the perturbation.",
             "- **Do not resize, crop or filter** the images; hubs and pipelines that \"optimise\" uploads "
             "must be switched off."]
    defenses = [g for g in ((release.get("verification") or {}).get("groups") or []) if g.get("defense") != "none"]
    if defenses:
        lines += ["", "Measured on this store (defense rows of its verification; worst seed):"]
        for g in defenses:
            state = {True: "protection holds", False: "**protection broken**", None: "not judged"}[g.get("holds")]
            lines.append(f"- `{g['defense']}` ({g['profile']}, {g['weighting']}): retained learnability "
                         f"{_fmt(g.get('worst_learnability'))}, {state}")
    else:
        lines += ["", f"This store's verification ran no defense rows. {README_JPEG_NOTE}"]
    return lines


def _files(release: dict) -> list:
    fmt = release["format"]
    snippet = LOADING[fmt]
    if fmt == "webdataset":
        shards = len(release["splits"].get("train", {}).get("files", [])) or 1
        snippet = snippet % (shards - 1)
    return ["- `release.json`: the machine-readable record (tasks, splits, protection, verification).",
            "- `croissant.json`: MLCommons Croissant 1.0 metadata.",
            "- `SHA256SUMS`: sha256 of every file.",
            *[f"- `{split}/`: {record['count']} samples in {len(record['files'])} file(s)"
              for split, record in release["splits"].items()],
            "", "```python", snippet.replace("OUT", "."), "```",
            "", "Reviewers can verify exactly what was published: `mtlue verify OUT --clean SOURCE`."]
