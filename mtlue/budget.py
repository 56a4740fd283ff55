"""The budget a dataset needs: a recipe run at a list of ε, the verdict grid at each, one curve.

For every ε in the list the recipe runs as its own resumable run, `RUN/budget/eps-<ε>/` (the recipe's
own ε is the main run `RUN/` itself), with `protect.epsilon` overridden and nothing else changed. The
clean reference victims do not depend on ε, so every ε run reuses the ones already trained (hard links;
each is reused only when its fingerprint matches, as any victim). The curve is read from each run's
report.json: per attacker profile, the worst no-defense group's retained learnability over weightings and
seeds; per ε, the image quality of the stored train images against the clean ones (PSNR and SSIM, kornia)
and the verdict. The smallest passing ε is the smallest listed ε whose verdict is PASS and from which every
larger listed ε passes too.

Writes `RUN/budget/budget.json`, `budget.md`, `curve.png` (retained learnability and PSNR against ε) and
`samples.png` (the same train images at every ε).
"""

from __future__ import annotations

import os

import numpy as np

from mtlue.jsonio import write_json
from mtlue.stages import read_json
from mtlue.store import update_manifest
from mtlue.store.layout import write_text_atomic

QUALITY_SAMPLES = 512  # train images PSNR/SSIM are averaged over
SAMPLE_COLUMNS = 6


def eps_label(epsilon) -> str:
    return f"{epsilon:g}"


def image_quality(clean_images: np.ndarray, stored_images: np.ndarray) -> dict:
    """Mean PSNR (dB) and SSIM (11×11 Gaussian window) of stored against clean uint8 images (kornia)."""
    import torch
    from kornia.metrics import psnr, ssim

    clean = torch.from_numpy(clean_images).permute(0, 3, 1, 2).float() / 255.0
    stored = torch.from_numpy(stored_images).permute(0, 3, 1, 2).float() / 255.0
    mse = ((clean - stored) ** 2).flatten(1).mean(1)
    per_image = torch.where(mse > 0, 10 * torch.log10(1.0 / mse.clamp_min(1e-12)), torch.full_like(mse, float("inf")))
    finite = per_image[torch.isfinite(per_image)]
    window = min(11, clean.shape[-1] - (1 - clean.shape[-1] % 2), clean.shape[-2] - (1 - clean.shape[-2] % 2))
    return {"psnr_db": float(psnr(stored, clean, 1.0)), "psnr_db_mean_per_image": float(finite.mean()) if len(finite) else None,
            "ssim": float(ssim(stored, clean, max(3, window)).mean()), "samples": int(len(clean))}


def curve_point(epsilon, run_dir: str, source) -> dict:
    """One ε: the verdict, worst no-defense learnability per profile, and image quality."""
    from mtlue.data import open_source
    from mtlue.diagnostics import aligned_train

    report = read_json(os.path.join(run_dir, "report", "report.json"))
    profiles = {}
    for group in report.get("groups", []):
        if not group.get("in_verdict") or group.get("worst") is None:
            continue
        name = group["profile"]
        profiles[name] = max(profiles.get(name, -np.inf), float(group["worst"]))
    stored, clean = aligned_train(open_source(os.path.join(run_dir, "store")), source, QUALITY_SAMPLES)
    return {"epsilon": epsilon, "run": run_dir, "verdict": report.get("verdict"),
            "worst_learnability": max(profiles.values()) if profiles else None,
            "profiles": profiles, "quality": image_quality(clean, stored.images),
            "max_learnability": (report.get("rules") or {}).get("max_learnability")}


def smallest_passing(points: list):
    """The smallest ε from which every listed ε passes (None when the largest does not)."""
    passing = None
    for point in sorted(points, key=lambda p: p["epsilon"], reverse=True):
        if point["verdict"] != "PASS":
            break
        passing = point["epsilon"]
    return passing


def epsilon_recipe(recipe, epsilon, name: str):
    """The recipe with only `protect.epsilon` changed, run under another name."""
    import dataclasses

    return dataclasses.replace(recipe, name=name, protect={**recipe.protect, "epsilon": epsilon})


def run_budget(recipe, epsilons, runs_dir: str = "runs", device=None, progress: bool = True, log=print,
               jobs: int = 1, check_store: bool = True) -> dict:
    """Run the recipe at every ε (resumably) and write the curve into RUN/budget/; returns budget.json."""
    from mtlue.data import open_source
    from mtlue.pipeline import plan_run, run_pipeline

    main_plan = plan_run(recipe, runs_dir)
    main_epsilon = main_plan.protect.epsilon
    budget_dir = os.path.join(main_plan.run_dir, "budget")
    runs = {}
    if os.path.isfile(os.path.join(main_plan.run_dir, "report", "report.json")):  # the recipe's own ε is a point
        runs[main_epsilon if not float(main_epsilon).is_integer() else int(main_epsilon)] = main_plan.run_dir
    for epsilon in epsilons:
        if float(epsilon) == float(main_epsilon) and runs:
            continue
        sub = epsilon_recipe(recipe, epsilon, f"eps-{eps_label(epsilon)}")
        run_dir = os.path.join(budget_dir, sub.name)
        log(f"[budget] ε = {eps_label(epsilon)}/255")
        run_pipeline(sub, budget_dir, device=device, resume=True, progress=progress, log=log, jobs=jobs,
                     check_store=check_store,
                     reuse_victims=(os.path.join(main_plan.run_dir, "victims"),
                                    *(os.path.join(done, "victims") for done in runs.values())))
        runs[epsilon] = run_dir
    source = open_source(recipe.source)
    points = [curve_point(epsilon, runs[epsilon], source) for epsilon in sorted(runs)]
    result = {"recipe": recipe.path, "source": recipe.source, "method": recipe.protect.get("method", "mtlue"),
              "recipe_epsilon": main_epsilon, "epsilons": list(sorted(runs)), "points": points,
              "smallest_passing_epsilon": smallest_passing(points),
              "rule": "the smallest listed ε whose verdict is PASS and from which every larger listed ε passes",
              "recipe_epsilon_learnability": next((p["worst_learnability"] for p in points
                                                   if float(p["epsilon"]) == float(main_epsilon)), None)}
    os.makedirs(budget_dir, exist_ok=True)
    for point in points:  # every store states where its ε falls on the curve (verify, the dataset card)
        update_manifest(os.path.join(point["run"], "store"), "budget", placement(result, point["epsilon"]))
    write_json(os.path.join(budget_dir, "budget.json"), result)
    write_text_atomic(os.path.join(budget_dir, "budget.md"), render_markdown(result))
    plot_curve(result, os.path.join(budget_dir, "curve.png"))
    plot_samples(result, source, os.path.join(budget_dir, "samples.png"))
    return result


def placement(result: dict, epsilon) -> dict:
    """What a store made at `epsilon` records of the curve: its ε, the curve and the smallest passing ε."""
    return {"epsilon": epsilon, "smallest_passing_epsilon": result["smallest_passing_epsilon"],
            "curve": [[p["epsilon"], p["worst_learnability"], p["verdict"]] for p in result["points"]],
            "source": result["source"], "method": result["method"], "rule": result["rule"]}


def placement_line(measured: dict) -> str:
    """One sentence: where a store's ε falls on its measured budget curve."""
    here = next((c for c in measured["curve"] if float(c[0]) == float(measured["epsilon"])), None)
    kept = "" if here is None or here[1] is None else f" (worst retained learnability {here[1]:.3f}, {here[2]})"
    smallest = measured.get("smallest_passing_epsilon")
    need = (f"the smallest listed ε that passes is {eps_label(smallest)}/255" if smallest is not None
            else f"no listed ε up to {eps_label(max(float(c[0]) for c in measured['curve']))}/255 passes")
    return (f"budget: this release uses ε = {eps_label(measured['epsilon'])}/255{kept}; on the curve measured for "
            f"{measured['source']} ({measured['method']}), {need}")


def budget_lines(result: dict) -> list:
    """The curve as a text table, then the answer."""
    profiles = sorted({name for p in result["points"] for name in p["profiles"]})
    header = ["ε (/255)", *profiles, "worst", "verdict", "PSNR dB", "SSIM"]
    rows = [[eps_label(p["epsilon"]), *[f"{p['profiles'].get(n, float('nan')):.3f}" for n in profiles],
             "–" if p["worst_learnability"] is None else f"{p['worst_learnability']:.3f}", str(p["verdict"]),
             f"{p['quality']['psnr_db']:.1f}", f"{p['quality']['ssim']:.3f}"] for p in result["points"]]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).rjust(w) for c, w in zip(r, widths)) for r in [header, *rows]]
    lines.append(budget_answer(result))
    return lines


def budget_answer(result: dict) -> str:
    smallest = result["smallest_passing_epsilon"]
    name = result["source"]
    if smallest is None:
        return (f"{name} needs more than ε = {eps_label(max(result['epsilons']))}/255 with {result['method']}: "
                f"no listed ε passes (see the curve); the recipe's ε = {eps_label(result['recipe_epsilon'])}/255")
    return (f"{name} needs ε = {eps_label(smallest)}/255 with {result['method']} (smallest listed ε that passes, "
            f"measured); the recipe's ε = {eps_label(result['recipe_epsilon'])}/255 "
            f"{'passes' if float(result['recipe_epsilon']) >= float(smallest) else 'does not pass'}")


def render_markdown(result: dict) -> str:
    lines = budget_lines(result)
    return "\n".join([f"# Budget curve: {result['source']} ({result['method']})", "",
                      "Retained learnability (worst no-defense group per attacker profile, worst seed), the verdict, "
                      "and the image quality of the stored train images, per ε.", "", "```", *lines[:-1], "```", "",
                      f"**{lines[-1]}**", "", "![curve](curve.png)", "", "![samples](samples.png)", ""])


def plot_curve(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = result["points"]
    xs = [float(p["epsilon"]) for p in points]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    for name in sorted({n for p in points for n in p["profiles"]}):
        left.plot(xs, [p["profiles"].get(name, np.nan) for p in points], marker="o", label=name)
    limit = next((p["max_learnability"] for p in points if p.get("max_learnability") is not None), None)
    if limit is not None:
        left.axhline(limit, color="k", ls="--", lw=1, label=f"limit {limit:g}")
    left.set_xscale("log", base=2)
    left.set_xlabel("ε (1/255)")
    left.set_ylabel("retained learnability (worst)")
    left.legend(fontsize=7)
    right.plot(xs, [p["quality"]["psnr_db"] for p in points], marker="o", color="C3")
    right.set_xscale("log", base=2)
    right.set_xlabel("ε (1/255)")
    right.set_ylabel("PSNR (dB)")
    fig.suptitle(f"{result['source']}: {result['method']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_samples(result: dict, source, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mtlue.data import open_source

    # every ε's store holds the same train indices in the same order: the first images line up
    stores = [open_source(os.path.join(point["run"], "store")) for point in result["points"]]
    first = [next(store.batches("train", SAMPLE_COLUMNS, 0, min(SAMPLE_COLUMNS, store.size("train"))))
             for store in stores]
    position = {int(i): p for p, i in enumerate(source.index_array("train"))}
    clean = np.stack([source.get("train", position[int(i)]).image for i in first[0].index])
    rows = [("clean", clean)] + [(f"ε {eps_label(point['epsilon'])}", batch.images)
                                 for point, batch in zip(result["points"], first)]
    fig, axes = plt.subplots(len(rows), SAMPLE_COLUMNS, figsize=(1.4 * SAMPLE_COLUMNS, 1.4 * len(rows)), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(SAMPLE_COLUMNS):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(images):
                image = images[c]
                ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None,
                          vmin=0, vmax=255)
            if c == 0:
                ax.set_title(label, fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
