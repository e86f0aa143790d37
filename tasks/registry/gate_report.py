"""The gate as people read it: one Markdown artifact with the decision, the numbers behind it, the
slices and the champion's and challenger's next words side by side."""

from __future__ import annotations

from collections.abc import Sequence

from tasks.records import Evaluation, Registration
from tasks.registry.gate import GateDecision


def slice_rows(decision: GateDecision) -> list[dict[str, str]]:
    """Both models per slice, worst change for the challenger first."""
    return [
        {
            "slice": s.name,
            "reviews": str(s.reviews),
            "targets": str(s.targets),
            "challenger": f"{s.challenger_perplexity:.4g}",
            "champion": f"{s.champion_perplexity:.4g}",
            "change": f"{s.change:+.1%}",
            "blocks": "yes" if s.name in decision.blocking_slices else "",
        }
        for s in sorted(decision.slices, key=lambda s: -s.change)
    ]


def _table(rows: Sequence[dict[str, str]]) -> list[str]:
    if not rows:
        return []
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = (row[key].replace("|", "\\|") for key in header)
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def gate_markdown(
    registration: Registration, evaluation: Evaluation, run_link: str, version_link: str
) -> str:
    """Decision and reason, models vs baselines, interval, slices and the prompts side by side."""
    metrics = evaluation.metrics
    verdict = "promoted to champion" if registration.promoted else "not promoted"
    lines = [
        f"# {registration.model_name} v{registration.version}: {verdict}",
        "",
        registration.reason,
        "",
        f"MLflow run: {run_link}; model: {version_link}",
        "",
    ]
    models = [
        {
            "model": f"challenger v{registration.version}",
            "test perplexity": f"{metrics['test_perplexity']:.4g}",
            "top-1": f"{metrics['test_top1']:.3f}",
            "top-5": f"{metrics['test_top5']:.3f}",
        }
    ]
    if evaluation.champion is not None:
        models.append(
            {
                "model": f"champion v{evaluation.champion.version} (re-scored here)",
                "test perplexity": f"{evaluation.champion.perplexity:.4g}",
                "top-1": "",
                "top-5": "",
            }
        )
    for baseline in ("unigram", "bigram"):
        perplexity = metrics[f"{baseline}_perplexity"]
        models.append(
            {"model": baseline, "test perplexity": f"{perplexity:.4g}", "top-1": "", "top-5": ""}
        )
    lines += ["## Models on the test split", "", *_table(models)]
    if registration.interval is not None:
        point, low, high = registration.interval
        lines += [
            "## Change against the champion (paired bootstrap over reviews)",
            "",
            f"Relative perplexity change {point:+.2%}, interval [{low:+.2%}, {high:+.2%}] "
            "(negative is better).",
            "",
        ]
    if registration.slices:
        lines += ["## Slices", "", *_table(registration.slices)]
    if evaluation.side_by_side:
        lines += ["## Next words side by side", "", *_table(evaluation.side_by_side)]
    return "\n".join(lines)
