"""The transfer study's report: each row over its seeds (means, spreads, the paired difference from the reference row
and what CBAM adds), its Markdown table, and how its plot tells the rows apart."""

import math
import statistics

REFERENCE_ROW = "staged"  # the tutorial's stages with a new stem (the default until this study): the rows' baseline


ROW_STYLES = "colour: the recipe; solid: kept stem, dotted: kept stem without CBAM, dashed: new stem, dash-dot: " \
             "new stem without CBAM"


def row_style(name: str) -> tuple[str, str]:
    """A row's colour key in the plot, its recipe (the same with or without the kept stem and CBAM), and its line
    style, its family (ROW_STYLES)."""
    kept, cbam = "-kept-stem" in name, "-no-cbam" not in name
    recipe = name.replace("-kept-stem", "").replace("-no-cbam", "")
    return recipe, {(True, True): "-", (True, False): ":", (False, True): "--", (False, False): "-."}[kept, cbam]


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """The mean and the sample standard deviation (None for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def summarise(runs: list[dict], names: list[str], reference_row: str = REFERENCE_ROW) -> list[dict]:
    """Each row over its seeds: mean and standard deviation per epoch, at the stage ends and final; and its paired
    difference from the reference row (per seed, the same data and init draws), with the standard error of that
    difference, for the seeds both have run."""
    by_row = {name: {run["seed"]: run for run in runs if run["name"] == name} for name in names}
    reference = by_row.get(reference_row, {})
    summaries = []
    for name, seeds in by_row.items():
        if not seeds:
            continue
        first = next(iter(seeds.values()))
        curves = [[entry["accuracy"] for entry in run["epochs"]] for run in seeds.values()]
        epochs = [mean_std(list(values)) for values in zip(*curves, strict=True)]
        ends = [statistics.fmean(values) for values in
                zip(*(run["accuracy_at_stage_ends"] for run in seeds.values()), strict=True)]
        final, final_std = mean_std([run["final_accuracy"] for run in seeds.values()])
        summary = {
            "name": name, "description": first["description"], "seeds": sorted(seeds),
            "epochs": [{"epoch": entry["epoch"], "stage": entry["stage"], "accuracy": mean, "spread": spread}
                       for entry, (mean, spread) in zip(first["epochs"], epochs, strict=True)],
            "stage_ends": first["stage_ends"], "accuracy_at_stage_ends": ends,
            "final_accuracy": final, "final_std": final_std,
            "best_accuracy": statistics.fmean(run["best_accuracy"] for run in seeds.values()),
            "wall_seconds": statistics.fmean(run["wall_seconds"] for run in seeds.values()),
        }
        if name != reference_row and (difference := paired_difference(seeds, reference)):
            summary["difference"] = difference
        # what CBAM adds: the row with it minus its twin without it (without_cbam), seed by seed
        if name.endswith("-no-cbam") and (gain := paired_difference(by_row.get(name[:-len("-no-cbam")], {}), seeds)):
            summary["cbam_gain"] = gain
        summaries.append(summary)
    return summaries


def paired_difference(runs: dict[int, dict], reference: dict[int, dict]) -> dict | None:
    """The mean over the seeds both have run of the difference in final accuracy (runs minus reference, each by
    seed), its standard error and whether it is clear (over twice that); None for fewer than two such seeds."""
    paired = [runs[seed]["final_accuracy"] - reference[seed]["final_accuracy"] for seed in sorted(runs)
              if seed in reference]
    if len(paired) < 2:
        return None
    difference, spread = mean_std(paired)
    error = spread / math.sqrt(len(paired))
    return {"mean": difference, "standard_error": error, "seeds": len(paired), "clear": abs(difference) > 2 * error}


def results_table(results: dict) -> str:
    """The Markdown table of the rows over the seeds: accuracy at each stage's end, final (mean and standard
    deviation), the paired difference from the reference row, best epoch, time per run."""
    reference = results["reference"]
    lines = [f"| row | seeds | after stage 1 | after stage 2 | final | vs `{reference}` | best epoch | time |",
             "|---|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        ends = [f"{100 * a:.1f}% (ep {e})" for a, e in zip(row["accuracy_at_stage_ends"], row["stage_ends"],
                                                            strict=True)][:-1]
        ends += [""] * (2 - len(ends))
        spread = f" ± {100 * row['final_std']:.1f}" if row["final_std"] is not None else ""
        versus = _signed(row["difference"]) if "difference" in row else ""
        lines.append(f"| {row['name']} | {len(row['seeds'])} | {' | '.join(ends)} | "
                     f"**{100 * row['final_accuracy']:.1f}%**{spread} | {versus} | {100 * row['best_accuracy']:.1f}% | "
                     f"{row['wall_seconds'] / 60:.1f} min |")
    lines += ["", "The rows:", "",
              *(f"- `{row['name']}`: {row['description']}" for row in results["rows"])]
    gains = [(row["name"][:-len("-no-cbam")], row["cbam_gain"]) for row in results["rows"] if "cbam_gain" in row]
    if gains:
        lines += ["", "What CBAM adds, each recipe with it minus the same without it (paired by seed, ± the standard "
                  "error, in points): " + "; ".join(f"`{name}` {_signed(gain)}" for name, gain in gains) + "."]
    seeds = results["seeds"]
    lines += ["", f"Each row: the mean over its seeds (of {', '.join(map(str, seeds))}) "
              "of the validation accuracy, ± its standard deviation over the seeds; `vs "
              f"{reference}`: the mean of each seed's difference in final accuracy from `{reference}` (same "
              "seed: same training sample, validation images and init), ± its standard error, **clear** where it is "
              "larger than twice that; best epoch: the mean of each run's best epoch (chosen on the validation "
              "images, so optimistic); time: one run's logged epochs (training and evaluation)."]
    pretrain = results.get("pretrain")
    if pretrain:
        last = ", ".join(f"{100 * e['accuracy']:.1f}%" for e in pretrain["epochs"][-4:])
        lines += ["", f"Pretraining: {100 * pretrain['final_accuracy']:.2f}% accuracy on "
                  f"{pretrain['split_sizes']['validation']:,} held-out source images after "
                  f"{pretrain['stage_ends'][-1]} epochs on {pretrain['split_sizes']['train']:,} (the last four "
                  f"epochs: {last}), {pretrain['wall_seconds'] / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def _signed(difference: dict) -> str:
    """A paired difference, in points: '+3.7 ± 0.1 **clear**'."""
    return (f"{100 * difference['mean']:+.1f} ± {100 * difference['standard_error']:.1f}"
            + (" **clear**" if difference["clear"] else ""))
