"""Turn a finished `mtlue run` directory into a results/ JSON (the docs pages and README status read those).

    python bench/results_from_run.py runs/digits --command "mtlue run pipelines/digits.toml" \\
        --wall-s 612 --out results/digits-demo.json [--title ...] [--status]

Reads RUN/report/report.json (the verdict rows: profile, weighting, defense, worst seed's retained
learnability, result) and, when present, RUN/budget/budget.json (the ε curve: worst learnability per
profile, verdict, PSNR and SSIM per ε, and the smallest passing ε). Nothing is typed in by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def verdict_rows(report: dict) -> list:
    rows = []
    limit = (report.get("rules") or {}).get("max_learnability")
    for group in report["groups"]:
        worst = group.get("worst")
        result = "–" if worst is None else ("PASS" if worst <= limit else "FAIL")
        if not group.get("in_verdict"):
            result += " (defense row)"
        rows.append([group["profile"], group["weighting"], group["defense"],
                     None if worst is None else round(worst, 3), result])
    return rows


def budget_rows(budget: dict) -> tuple:
    profiles = sorted({name for p in budget["points"] for name in p["profiles"]})
    rows = [[p["epsilon"], *[round(p["profiles"][n], 3) if n in p["profiles"] else None for n in profiles],
             p["verdict"], round(p["quality"]["psnr_db"], 1), round(p["quality"]["ssim"], 3)] for p in budget["points"]]
    return ["ε (/255)", *[f"worst {n}" for n in profiles], "verdict", "PSNR dB", "SSIM"], rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--command", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--title", default=None)
    parser.add_argument("--wall-s", type=float, default=None)
    parser.add_argument("--machine", default=f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU")
    parser.add_argument("--status", action="store_true", help="feed the README status table")
    parser.add_argument("--budget-out", default=None, help="also write the budget curve as its own results JSON")
    args = parser.parse_args(argv)
    with open(os.path.join(args.run_dir, "report", "report.json")) as fh:
        report = json.load(fh)
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    notes = [f"Verdict: {report.get('verdict')}: {report.get('verdict_reason')}",
             "worst: the worst victim seed's retained learnability, (protected − chance)/(clean − chance) "
             "averaged over tasks weighted by clean − chance; the verdict limit is "
             f"{(report.get('rules') or {}).get('max_learnability')}."]
    extra = {}
    budget_path = os.path.join(args.run_dir, "budget", "budget.json")
    if os.path.isfile(budget_path):
        with open(budget_path) as fh:
            budget = json.load(fh)
        columns, rows = budget_rows(budget)
        extra["budget"] = {"columns": columns, "rows": rows, "smallest_passing_epsilon":
                           budget["smallest_passing_epsilon"], "rule": budget["rule"]}
        smallest = budget["smallest_passing_epsilon"]
        notes.append("Budget curve (the recipe at each ε): " + "; ".join(
            f"ε {r[0]}: worst {max(v for v in r[1:-3] if v is not None):.3f}, {r[-3]}, PSNR {r[-2]} dB, SSIM {r[-1]}"
            for r in rows) + ". " + (f"Smallest passing ε: {smallest}/255." if smallest is not None
                                     else f"No listed ε up to {max(budget['epsilons'])}/255 passes."))
    payload = {"title": args.title or report.get("title"), "command": args.command, "commit": commit,
               "machine": args.machine, "date": time.strftime("%Y-%m-%d"), "wall_s": args.wall_s,
               "table": {"columns": ["profile", "weighting", "defense", "worst", "result"],
                         "rows": verdict_rows(report)},
               "notes": notes}
    if args.status:
        payload["status_columns"] = ["profile", "weighting", "defense", "worst", "result"]
    if extra:
        payload["extra"] = extra
    write(args.out, payload)
    if args.budget_out and extra.get("budget"):
        curve = extra["budget"]
        smallest = curve["smallest_passing_epsilon"]
        write(args.budget_out, {
            "title": f"The budget {os.path.basename(os.path.normpath(args.run_dir))} needs: the recipe at each ε",
            "command": args.command, "commit": commit, "machine": args.machine, "date": payload["date"],
            "wall_s": args.wall_s, "table": {"columns": curve["columns"], "rows": curve["rows"]},
            "notes": [f"Smallest passing ε: {smallest}/255 ({curve['rule']})." if smallest is not None
                      else "No listed ε passes.", "PSNR and SSIM: stored train images against the clean ones."],
            **({"status_columns": curve["columns"]} if args.status else {})})


def write(path: str, payload: dict) -> None:
    with open(path, "w") as fh:
        json.dump(payload, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    print(f"{path}: {len(payload['table']['rows'])} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
