"""Sentences computed from an ablation's records (nothing here is written in advance)."""

from __future__ import annotations

from hyperdas.experiments import diagnosis


def _f(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _d(records, variant):
    found = [r for r in records if r["variant"] == variant]
    return found[0]["overall"]["disentangle"] if found and "overall" in found[0] else None


def describe(name: str, records: list[dict]) -> list[str]:
    """Sentences computed from an ablation's records (nothing here is written in advance)."""
    if not records:
        return [f"{name}: no records"]
    if name == "diagnosis":
        return diagnosis.describe(records)
    lines = []
    if name == "controls":
        ref = _d(records, "reference")
        for r in records:
            if r["variant"] == "conflict":
                lines.append(
                    f"conflict: the output follows the swapped-in activations in {r['follows_activations']:.0%} "
                    f"of {r['n']} pairs, the instruction's entity in {r['follows_instruction']:.0%}, neither in "
                    f"{r['follows_neither']:.0%} -> mostly {r['verdict']}"
                )
            elif r["variant"] != "reference" and ref is not None:
                d = r["overall"]["disentangle"]
                lines.append(
                    f"{r['variant']}: Disentangle {ref:.3f} -> {d:.3f} ({d - ref:+.3f}; Cause "
                    f"{_f(r['overall']['cause'])}, Iso {_f(r['overall']['iso'])})"
                )
        return lines
    scored = [r for r in records if "overall" in r]
    best = max(scored, key=lambda r: r["overall"]["disentangle"])
    worst = min(scored, key=lambda r: r["overall"]["disentangle"])
    if best["overall"]["disentangle"] == worst["overall"]["disentangle"]:
        lines.append(f"{name}: Disentangle is {best['overall']['disentangle']:.3f} for every variant")
    else:
        lines.append(
            f"{name}: Disentangle ranges from {worst['overall']['disentangle']:.3f} ({worst['variant']}) to "
            f"{best['overall']['disentangle']:.3f} ({best['variant']})"
        )
    for r in scored:
        extra = ""
        if "selection_entropy" in r:
            extra = (
                f", selection entropy {r['selection_entropy']:.2f} nats, "
                f"{r['last_token_mass']:.0%} of source mass on the entity's last token"
            )
        if "n_keys" in r:
            extra = f", {r['n_pairs']} pairs"
        if "loss_curve" in r and r["loss_curve"]:
            extra = f", final training loss {r['loss_curve'][-1][1]:.3f}"
        o = r["overall"]
        lines.append(
            f"  {r['variant']}: Cause {_f(o['cause'])}, Iso {_f(o['iso'])}, Disentangle {_f(o['disentangle'])}{extra}"
        )
    return lines
