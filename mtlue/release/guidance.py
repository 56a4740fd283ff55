"""Which ways of publishing a protected store keep the protection, for `mtlue inspect` and the README.

The protection is a pattern of at most ε/255 per pixel in the stored bytes: whatever keeps the bytes
(lossless PNG, `mtlue release` in any format) keeps it, and whatever re-quantises them (JPEG,
posterising, resizing) changes it. How much a JPEG round trip costs depends on whether the generator
trained through JPEG (`mtlue protect --robust jpeg`); this store's own defense rows, when
`mtlue verify --defenses ...` ran, say it exactly.
"""

from __future__ import annotations

# Measured retained learnability of the JPEG-10 row (plain/ew victim, 8 epochs) of digits-robust.toml and
# photos-robust.toml, with robust = [] and as shipped (README "Defense-robust protection"); quoted when a
# store has no jpeg row of its own. The robust generator did not pay: it retains more, not less.
MEASURED_JPEG10 = {"plain": "digits 0.36, photos 0.87", "robust": "digits 0.89, photos 0.88"}

# A defense row holds at this retained learnability (README "Defense-robust protection"; the verdict's own
# max_learnability, 0.2 by default, is for the no-defense rows).
DEFENSE_ROW_TARGET = 0.5


def publication_guidance(protection: dict | None, verification: dict | None) -> list[str]:
    """Lines saying which publication paths keep this store's protection (empty for a clean store)."""
    if not protection:
        return []
    robust = list(protection.get("robust") or [])
    lines = ["lossless PNG (mtlue release, any --format) keeps the stored bytes: the protection holds as verified"]
    verification = verification or {}
    rows = {}  # defense -> its worst group (highest retained learnability) over profiles and weightings
    for g in verification.get("groups", []):
        if g.get("defense") not in (None, "none") and g.get("worst_learnability") is not None and \
                g["worst_learnability"] > rows.get(g["defense"], {}).get("worst_learnability", float("-inf")):
            rows[g["defense"]] = g
    measured = [f"{name} retains {g['worst_learnability']:.2f} ({g['profile']}/{g['weighting']})"
                for name, g in rows.items() if name.startswith("jpeg")]
    if measured:
        lines.append(f"JPEG re-encoding, measured on this store: {', '.join(measured)} (0 = nothing learnt, "
                     f"1 = as clean; protection holds at <= {DEFENSE_ROW_TARGET:g})")
    elif "jpeg" in robust:
        lines.append("JPEG re-encoding: the generator trained through JPEG (robust: jpeg), yet the shipped robust "
                     f"recipes measured jpeg10 {MEASURED_JPEG10['robust']} retained: assume JPEG undoes it "
                     "(run mtlue verify --defenses jpeg10 for this store's own number)")
    else:
        lines.append("JPEG re-encoding costs the protection: this generator did not train through JPEG (plain "
                     f"generators measured jpeg10 {MEASURED_JPEG10['plain']} retained; --robust jpeg did not "
                     "lower it in 8 passes): publish PNG only")
    others = [f"{name} {g['worst_learnability']:.2f}" for name, g in rows.items() if not name.startswith("jpeg")]
    if others:
        lines.append("other defenses, measured on this store (retained): " + ", ".join(others))
    lines.append("resizing, cropping to another size or posterising re-quantise the pattern: publish at the stored size")
    return lines
