"""The report of a probe run, written for a reader of the science: loss and metric curves
first, then every other quantity titled in words with its units and one sentence on how to
read it; layers named by module and drawn in one colour per layer across every figure; log
step axes where measurements were log-spaced; values measured once as bars or numbers;
layer-by-layer matrices as heat maps."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from learnscope.analysis import Table
from learnscope.probes.session import PROBE_FAILED
from learnscope.report.figures import (
    Series,
    bar_figure,
    captioned,
    layer_colours,
    line_figure,
    matrix_figure,
    natural_key,
)
from learnscope.report.html import StudySection, write_report
from learnscope.store.records import Record

# Metadata that names *which* series a value belongs to (the rest describes how it was
# measured and is shown in the configuration table instead).
_SERIES_KEYS = ("layer", "parameter", "subset", "feature", "layer_a", "layer_b")
_MAX_SERIES = 12
SCALARS_PROBE = "scalars"
"""The probe label of the values passed to ``scope.step(loss, **scalars)``."""
TOTAL_COLOUR = "#333333"
"""The colour of a total over every parameter (``parameter == "all"``)."""
ZERO_STEP_AT = 0.5
"""Where step 0 is drawn on a log step axis (it cannot sit on one)."""


@dataclass(frozen=True)
class FigureText:
    """The words around a figure: a title, the y axis with its unit, how to read it."""

    title: str
    y_title: str
    caption: str


_LAYER_NOTE = " Colour: the module, the same in every figure."
_PARAMETER_NOTE = (" Colour: the parameter's module, the same in every figure; dotted: a bias; "
                   "grey: all parameters together.")
FIGURE_TEXT: dict[str, FigureText] = {
    # scalars passed to scope.step
    "loss": FigureText("Training loss", "loss (one mini-batch)",
                       "The loss passed to scope.step after each optimizer step; each point "
                       "is one mini-batch, so the curve is noisy: read its trend."),
    "lr": FigureText("Learning rate", "learning rate", "The learning rate passed to scope.step."),
    # gradient statistics
    "grad_norm": FigureText("Gradient norm", "‖∇L‖₂",
                            "Size of the mini-batch loss gradient at the measured step, "
                            "per parameter and in total; spikes mark unstable steps."),
    "update_norm": FigureText("Update size per step", "‖Δθ‖₂ per step",
                              "How far the parameters moved per optimizer step, averaged over "
                              "the interval since the previous measurement."),
    "relative_update_norm": FigureText(
        "Relative update size per step", "‖Δθ‖ / ‖θ‖ per step",
        "Each step's move relative to the size of the weights it changes; a module far above "
        "the others is being rewritten fastest at that time."),
    "grad_snr": FigureText("Gradient signal-to-noise ratio", "‖E g‖² / tr Cov(g)",
                           "Above 1 the per-example gradients agree on a direction; below 1 "
                           "their disagreement (noise) dominates the mean."),
    "grad_noise_scale": FigureText(
        "Gradient noise scale B_simple", "examples",
        "tr Cov(g) / ‖E g‖²: roughly the batch size beyond which a larger batch no longer "
        "speeds up training (McCandlish et al. 2018)."),
    # weight spectra
    "lambda_max": FigureText("Largest eigenvalue of WᵀW/N", "λ_max",
                             "The top of each weight matrix's spectrum; rising above the "
                             "bulk edge λ₊ means the layer has learned a strong direction."),
    "mp_lambda_plus": FigureText("Marchenko-Pastur bulk edge", "λ₊",
                                 "Where the spectrum of a random matrix with the fitted noise "
                                 "variance would end; eigenvalues above it are signal."),
    "mp_sigma2": FigureText("Noise variance of the bulk", "σ²",
                            "The variance of the random-like part of each weight matrix, "
                            "fitted to the bulk of its spectrum."),
    "mp_spikes": FigureText("Eigenvalues beyond the bulk edge", "count",
                            "How many eigenvalues lie significantly beyond the Marchenko-"
                            "Pastur edge (Tracy-Widom test): directions the layer has learned."),
    "stable_rank": FigureText("Stable rank", "‖W‖_F² / ‖W‖₂²",
                              "How many directions carry a weight matrix's energy; a fall means "
                              "the layer concentrates on a few directions."),
    "effective_rank": FigureText("Effective rank", "exp(entropy of singular values)",
                                 "The number of singular directions in use (Roy & Vetterli "
                                 "2007); a fall means the layer becomes low-rank."),
    "alpha": FigureText("Power-law exponent of the spectrum's tail", "α",
                        "Smaller α means a heavier tail (Martin & Mahoney: 2 to 4 in well-"
                        "trained layers); values from fewer than 50 tail eigenvalues are "
                        "flagged unreliable in the records."),
    "distance_from_init_abs": FigureText(
        "Distance from initialisation", "‖θ − θ₀‖₂",
        "How far each parameter has moved from its initial value."),
    "distance_from_init_rel": FigureText(
        "Relative distance from initialisation", "‖θ − θ₀‖ / ‖θ₀‖",
        "Near 0 the weights barely change (the lazy, kernel regime); of order 1 the layer's "
        "features are rewritten."),
    # layer similarity
    "similarity_to_final": FigureText(
        "Similarity of each layer to its final representation", "similarity to final (1 = same)",
        "1 means a layer already represents the probe inputs as it will at the end; layers "
        "that reach 1 early have settled (Raghu et al. 2017: lower layers settle first)."),
    "steps_to_threshold": FigureText(
        "Steps until each layer settles", "step",
        "The first measured step at which a layer's similarity to its final representation "
        "passed the threshold; a short bar means the layer settled early."),
    "layer_similarity": FigureText(
        "Similarity between layers", "similarity",
        "Each cell compares two layers' representations of the probe inputs at the last "
        "measured step (1 = the same up to rotation and scale; the diagonal is 1 by "
        "definition); a bright block is a group of layers computing nearly the same thing."),
    # information plane
    "i_xt": FigureText("Information about the input I(X;T)", "bits",
                       "How much a layer's output T tells about which input it saw; a fall "
                       "late in training is the compression phase, when there is one."),
    "i_ty": FigureText("Information about the label I(T;Y)", "bits",
                       "How much a layer's output tells about the label; it rises as the "
                       "network learns and cannot exceed the input's I(X;Y)."),
    # per-example
    "fraction_correct": FigureText("Accuracy on the per-example set", "fraction correct",
                                   "Fraction of the tracked examples the model classifies "
                                   "correctly; on mislabeled (noisy) examples a rise is "
                                   "memorization."),
    "mean_margin": FigureText("Mean margin", "logit of the label − largest other logit",
                              "Positive: examples are classified correctly with room to spare; "
                              "negative: the label loses on average."),
    "mean_prob_true": FigureText("Mean probability of the label", "probability",
                                 "The probability the model gives to each example's label, "
                                 "averaged over the tracked examples."),
    # simplicity
    "agreement": FigureText("Agreement with a linear classifier", "fraction of inputs",
                            "How often the network predicts what a linear classifier "
                            "predicts; high early in training (simplicity bias)."),
    "linear_part": FigureText("Performance explained by the linear classifier", "bits",
                              "I(F;Y) − I(F;Y|L): the part of the network's information about "
                              "the label that the linear classifier also has (Nakkiran et al. "
                              "2019); close to I(F;Y) early in training."),
    "i_fy": FigureText("Network information about the label I(F;Y)", "bits",
                       "How much the network's predictions tell about the label."),
    "i_fy_given_l": FigureText("Information beyond the linear classifier I(F;Y|L)", "bits",
                               "What the network knows about the label that the linear "
                               "classifier does not; it grows once the network goes beyond "
                               "linear."),
    "i_ly": FigureText("Linear classifier's information about the label I(L;Y)", "bits",
                       "A constant reference: the linear classifier does not train."),
    "accuracy": FigureText("Accuracy", "fraction correct",
                           "Fraction of the probe inputs classified correctly."),
    # NTK
    "ntk_trace": FigureText("Trace of the empirical NTK", "tr K",
                            "The size of the neural tangent kernel on the probe inputs: how "
                            "strongly a gradient step moves the outputs."),
    "ntk_trace_ratio": FigureText("NTK trace relative to initialisation", "tr K / tr K₀",
                                  "1 throughout means the kernel stayed fixed (the lazy regime); "
                                  "a change means the network learns features."),
    "ntk_kernel_width": FigureText("NTK kernel width", "fraction of input pairs",
                                   "Fraction of pairs of different inputs whose normalised "
                                   "kernel exceeds the threshold: how broadly a step on one "
                                   "input moves the others."),
    "ntk_effective_rank": FigureText("Effective rank of the NTK", "effective rank",
                                     "How many directions in output space the kernel spans; a "
                                     "fall means learning concentrates on a few directions."),
    # linear regions
    "linear_regions": FigureText("Linear regions on the probe inputs", "distinct patterns",
                                 "Number of distinct ReLU on/off patterns over the probe "
                                 "inputs: how finely the network cuts the input space."),
    "regions_per_example": FigureText("Linear regions per probe input", "patterns / input",
                                      "1 means every probe input lies in its own linear "
                                      "region."),
    # superposition
    "n_represented": FigureText("Represented features", "features",
                                "Features whose embedding norm exceeds the threshold."),
    "dims_per_feature": FigureText("Dimensions per feature", "dimensions / feature",
                                   "Hidden dimensions divided by represented features; below "
                                   "1 the model stores features in superposition."),
    "mean_dimensionality": FigureText("Mean feature dimensionality", "dimensionality",
                                      "How much of a dimension each represented feature owns "
                                      "(1: its own, 1/2: shared with one other)."),
    "max_interference": FigureText("Largest interference between features", "interference",
                                   "The largest overlap between two features' directions; 0 "
                                   "means every feature is orthogonal to the others."),
    "feature_norm": FigureText("Feature embedding norm", "‖W_i‖",
                               "Near 1 a feature is represented, near 0 it is dropped."),
    "feature_dimensionality": FigureText("Feature dimensionality", "dimensionality",
                                         "How much of a dimension each feature owns."),
    # curvature
    "hessian_top_eigenvalue": FigureText(
        "Sharpness: largest Hessian eigenvalue", "λ_max(H)",
        "The loss curvature along its sharpest direction; under full-batch gradient descent "
        "with learning rate η it tends to rise to about 2/η (edge of stability)."),
    "hessian_trace": FigureText("Hessian trace", "tr H",
                                "Total curvature over all directions (Hutchinson estimate; its "
                                "standard error is in the records)."),
    # landscape
    "path_loss": FigureText("Loss along the straight path", "loss",
                            "The loss on the line from the reference (α = 0) to the final "
                            "weights (α = 1); a bump above both ends is a barrier."),
    "path_error": FigureText("Error along the straight path", "error",
                             "The error on the line from the reference (α = 0) to the final "
                             "weights (α = 1); a bump above both ends is a barrier."),
    "slice_loss": FigureText("Loss along random directions", "loss",
                             "The loss around the final weights along filter-normalised "
                             "random directions (Li et al. 2018): a wide basin is flat, a "
                             "narrow one sharp."),
    "slice_error": FigureText("Error along random directions", "error",
                              "The error around the final weights along filter-normalised "
                              "random directions."),
}


def figure_text(probe: str, key: str) -> FigureText:
    """The words for the figure of ``key``: from :data:`FIGURE_TEXT`, else a generic
    description that names the probe and key."""
    text = FIGURE_TEXT.get(key)
    if text is not None:
        return text
    if probe == SCALARS_PROBE:
        return FigureText(key.replace("_", " ").capitalize(), key,
                          f"The value passed to scope.step as {key}=... after each step.")
    return FigureText(key.replace("_", " ").capitalize(), key,
                      f"The value of {key} measured by the probe {probe} at each measured "
                      "step.")


def module_of(parameter: str) -> str:
    """The module a parameter belongs to (``blocks.2.mlp.weight`` -> ``blocks.2.mlp``); a
    top-level parameter (``W``) is its own name."""
    return parameter.rsplit(".", 1)[0] if "." in parameter else parameter


def report_layer_colours(records: Sequence[Record]) -> dict[str, str]:
    """One colour per module name for the whole report, from every record that names a layer
    or parameter; the total over all parameters is grey."""
    names: set[str] = set()
    for r in records:
        for k in ("layer", "layer_a", "layer_b"):
            if k in r.meta:
                names.add(str(r.meta[k]))
        if "parameter" in r.meta and r.meta["parameter"] != "all":
            names.add(module_of(str(r.meta["parameter"])))
    return layer_colours(names, fixed={"all": TOTAL_COLOUR})


def is_log_spaced(steps: Sequence[float]) -> bool:
    """Whether measurements were taken at log-spaced steps (so a log axis shows them evenly):
    at least three distinct positive steps spanning a decade or more, with a third or more of
    them in the lowest tenth of their range (evenly spaced steps put about a tenth there)."""
    pos = sorted({float(s) for s in steps if s > 0})
    if len(pos) < 3 or pos[-1] < 10 * pos[0]:
        return False
    cut = pos[0] + 0.1 * (pos[-1] - pos[0])
    return sum(s <= cut for s in pos) >= len(pos) / 3


def _titled(fig: Any, text: FigureText, probe: str, key: str, suffix: str = "") -> Any:
    """The title in words, the probe and key it comes from as the subtitle."""
    fig.update_layout(title={"text": text.title + suffix,
                             "subtitle": {"text": f"{probe}: {key}"}})
    return fig


def _log_step_ticks(steps: Sequence[float]) -> tuple[list[float], list[str]]:
    """Ticks at the powers of ten the steps span, step 0 labelled "0" where it is drawn."""
    pos = [s for s in steps if s > 0]
    lo, hi = math.floor(math.log10(min(pos))), math.ceil(math.log10(max(pos)))
    vals = [10.0 ** e for e in range(lo, hi + 1)]
    text = [f"{v:g}" for v in vals]
    if any(s <= 0 for s in steps):
        vals, text = [ZERO_STEP_AT, *vals], ["0", *text]
    return vals, text


def _series_name(meta: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """(legend name, colour key, dash) of one record's series."""
    if "layer" in meta:
        return str(meta["layer"]), str(meta["layer"]), None
    if "parameter" in meta:
        param = str(meta["parameter"])
        if param == "all":
            return "all parameters", "all", None
        module = module_of(param)
        kind = param[len(module) + 1:] if param != module else ""
        dash = "dot" if kind == "bias" else None
        return (f"{module} {kind}" if kind and kind != "weight" else module), module, dash
    parts = [f"{k}={meta[k]}" for k in ("subset", "feature") if k in meta]
    return ", ".join(parts), None, None


def probe_figures(records: Sequence[Record],
                  examples: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None
                  ) -> tuple[list[Any], list[Table]]:
    """The report's figures (plotly, each with a ``caption``) and tables: the scalars passed
    to ``scope.step`` first (the loss first of all), then each probe's quantities in the order
    measured; values measured once per series as bars (several layers) or in the table
    "Measured once"; layer pairs and 2-D loss slices as heat maps. ``examples`` (probe label
    -> example index -> ``{"label", "prediction"}``, from the Scope's findings context) adds
    the given label and the final model's prediction to the suspicious-examples table."""
    examples = examples or {}
    groups: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in records:
        groups[(r.probe, r.key)].append(r)
    order = sorted(groups, key=lambda pk: (pk[0] != SCALARS_PROBE, pk[1] != "loss"))
    colours = report_layer_colours(records)
    figures: list[Any] = []
    tables: list[Table] = []
    once_rows: list[list[Any]] = []
    for probe, key in order:
        recs = groups[(probe, key)]
        if key == PROBE_FAILED:
            tables.append(Table(f"{probe}: failed and switched off", ["step", "phase", "error"],
                                [[r.step, r.meta.get("phase"), r.meta.get("error")]
                                 for r in recs]))
            continue
        if key == "suspicious_example":
            known = examples.get(probe, {})
            rows = [[r.meta.get("rank"), int(r.value),
                     known.get(str(int(r.value)), {}).get("label"),
                     known.get(str(int(r.value)), {}).get("prediction")]
                    + [r.meta.get(k) for k in
                       ("score", "confidence", "variability", "learned_epoch", "forgetting")]
                    for r in sorted(recs, key=lambda r: r.meta.get("rank", 0))]
            tables.append(Table(f"{probe}: examples that look memorized or mislabeled",
                                ["rank", "example", "given label", "final prediction",
                                 "score", "confidence", "variability", "learned epoch",
                                 "forgetting events"], rows))
            continue
        if not any(math.isfinite(r.value) for r in recs):
            continue
        if key in ("i_xt", "i_ty") and (probe, "i_xt") in groups and (probe, "i_ty") in groups:
            if key == "i_xt":  # both drawn as one plane, at the place of the first
                plane = _information_plane(probe, recs, groups[(probe, "i_ty")], colours)
                if plane is not None:
                    figures.append(plane)
                    continue
            else:
                continue
        text = figure_text(probe, key)
        if all("layer_a" in r.meta and "layer_b" in r.meta for r in recs):
            figures.append(_pair_heatmap(probe, key, recs, text))
        elif all("alpha" in r.meta and "beta" in r.meta for r in recs):
            figures.append(_slice_heatmap(probe, key, recs, text))
        else:
            series = _split_series(recs)
            if all(len(rs) == 1 for rs in series.values()) and not any(
                    "alpha" in r.meta for r in recs):
                if len(series) == 1:
                    r = recs[0]
                    once_rows.append([text.title, r.value, text.y_title, r.step, probe, key,
                                      text.caption])
                else:
                    figures.append(_bar(probe, key, series, text, colours))
            else:
                figures.append(_lines(probe, key, series, text, colours))
    if once_rows:
        tables.insert(0, Table("Measured once", ["quantity", "value", "unit", "step", "probe",
                                                 "key", "how to read it"], once_rows))
    return figures, tables


def _split_series(recs: Sequence[Record]) -> dict[tuple[Any, ...], list[Record]]:
    series: dict[tuple[Any, ...], list[Record]] = defaultdict(list)
    for r in recs:
        series[tuple((k, r.meta[k]) for k in _SERIES_KEYS if k in r.meta)].append(r)
    return series


def _ordered(series: dict[tuple[Any, ...], list[Record]]
             ) -> list[tuple[tuple[str, str | None, str | None], list[Record]]]:
    """Series with their (name, colour key, dash), the total last, layers in module order."""
    named = [(_series_name(dict(ident)), rs) for ident, rs in series.items()]
    return sorted(named, key=lambda item: (item[0][1] == "all", natural_key(item[0][0])))


def _lines(probe: str, key: str, series: dict[tuple[Any, ...], list[Record]],
           text: FigureText, colours: dict[str, str]) -> Any:
    named = _ordered(series)
    shown = named[:_MAX_SERIES]
    by_alpha = any("alpha" in r.meta for _, rs in named for r in rs)
    lines = []
    for (name, colour_key, dash), rs in shown:
        if by_alpha:
            rs = sorted(rs, key=lambda r: r.meta["alpha"])
            xs: list[float] = [float(r.meta["alpha"]) for r in rs]
        else:
            rs = sorted(rs, key=lambda r: r.step)
            xs = [float(r.step) for r in rs]
        mode = "lines" if len(xs) > 60 else "lines+markers"
        lines.append(Series(name or key, xs, [r.value for r in rs], dash=dash, mode=mode,
                            color=colours.get(colour_key) if colour_key else None))
    steps = [x for s in lines for x in s.x]
    log_x = not by_alpha and is_log_spaced(steps)
    x_title = "α (interpolation coefficient)" if by_alpha else "training step"
    if log_x:
        x_title += " (log scale)"
        if any(x <= 0 for x in steps):
            x_title = f"training step (log scale; step 0 drawn at {ZERO_STEP_AT})"
            lines = [Series(s.name, [x if x > 0 else ZERO_STEP_AT for x in s.x], s.y,
                            dash=s.dash, mode=s.mode, color=s.color) for s in lines]
    caption = text.caption
    if any("parameter" in r.meta for _, rs in shown for r in rs):
        caption += _PARAMETER_NOTE
    elif any("layer" in r.meta for _, rs in shown for r in rs):
        caption += _LAYER_NOTE
    if len(named) > len(shown):
        caption += f" The first {len(shown)} of {len(named)} series are drawn."
    has_layers = any(c is not None and c != "all" for (_, c, _), _ in shown)
    fig = _titled(line_figure(text.title, lines, x_title=x_title, y_title=text.y_title,
                              log_x=log_x, height=380,
                              legend_title="module" if has_layers else ""), text, probe, key)
    if log_x:
        vals, labels = _log_step_ticks(steps)
        fig.update_xaxes(tickvals=vals, ticktext=labels)
    return captioned(fig, caption)


def _information_plane(probe: str, xt: Sequence[Record], ty: Sequence[Record],
                       colours: dict[str, str]) -> Any:
    """I(X;T) against I(T;Y), one line per layer through its measured steps (Shwartz-Ziv &
    Tishby 2017's information plane); None when no step has both values."""
    ty_at = {(str(r.meta.get("layer")), r.step): r.value for r in ty}
    paths: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    for r in xt:
        layer = str(r.meta.get("layer"))
        y = ty_at.get((layer, r.step), math.nan)
        if math.isfinite(r.value) and math.isfinite(y):
            paths[layer].append((r.step, r.value, y))
    if not paths:
        return None
    lines = []
    for layer in sorted(paths, key=natural_key):
        pts = sorted(paths[layer])
        lines.append(Series(layer, [p[1] for p in pts], [p[2] for p in pts],
                            color=colours.get(layer)))
    steps = sorted({p[0] for pts in paths.values() for p in pts})
    estimator = xt[0].meta.get("estimator", "unknown estimator")
    fig = line_figure("Information plane", lines, x_title="I(X;T): information about the "
                      "input (bits)", y_title="I(T;Y): information about the label (bits)",
                      height=420, legend_title="module")
    for line in lines:  # where each layer ended
        fig.add_scatter(x=[line.x[-1]], y=[line.y[-1]], mode="markers", showlegend=False,
                        hoverinfo="skip", marker={"size": 11, "symbol": "star",
                                                  "color": line.color or "#333"})
    fig.update_layout(title={"text": "Information plane",
                             "subtitle": {"text": f"{probe}: i_xt, i_ty"}})
    fig.update_xaxes(tickformat=".3~g")
    fig.update_yaxes(tickformat=".3~g")
    caption = ("Each line follows one layer's output T through training, from step "
               f"{steps[0]} to step {steps[-1]} (the star is the last measured step, "
               f"{len(steps)} steps in all). Up means the layer tells more about the label; "
               "left means it keeps less about which input it saw. Shwartz-Ziv & Tishby "
               "(2017) read a late move to the left as compression; Saxe et al. (2018) "
               f"found it depends on the activation function and the estimator ({estimator} "
               "here, on the probe inputs): compare runs under one estimator only.")
    n = xt[0].meta.get("n")
    if isinstance(n, int | float) and n > 1 and all(
            abs(p[1] - math.log2(n)) <= 1e-6 * math.log2(n) for pts in paths.values()
            for p in pts):
        caption += (f" Here every point sits at I(X;T) = log2({int(n)}) = {math.log2(n):.3g} "
                    "bits: each probe input lands in its own bin, the estimator is saturated "
                    "and the plane says nothing about compression (use fewer bins, "
                    "value_range, or the KDE estimator).")
    return captioned(fig, caption)


def _bar(probe: str, key: str, series: dict[tuple[Any, ...], list[Record]],
         text: FigureText, colours: dict[str, str]) -> Any:
    named = _ordered(series)
    names = [name for (name, _, _), _ in named]
    values = [rs[0].value for _, rs in named]
    fills = [colours.get(c, "#1f77b4") if c else "#1f77b4" for (_, c, _), _ in named]
    caption = text.caption + f" Measured once, at step {named[0][1][0].step}." + _LAYER_NOTE
    if any(not math.isfinite(v) for v in values):
        caption += " \"not reached\": no value (see the record's note)."
    fig = _titled(bar_figure(text.title, names, values, x_title="module",
                             y_title=text.y_title, colors=fills), text, probe, key)
    return captioned(fig, caption)


def _pair_heatmap(probe: str, key: str, recs: Sequence[Record], text: FigureText) -> Any:
    last = max(r.step for r in recs)
    at_last = [r for r in recs if r.step == last]
    names = sorted({str(r.meta[k]) for r in at_last for k in ("layer_a", "layer_b")},
                   key=natural_key)
    index = {n: i for i, n in enumerate(names)}
    z: list[list[float | None]] = [[None] * len(names) for _ in names]
    for i in range(len(names)):
        z[i][i] = 1.0  # a representation is identical to itself
    for r in at_last:
        a, b = index[str(r.meta["layer_a"])], index[str(r.meta["layer_b"])]
        value = r.value if math.isfinite(r.value) else None
        z[a][b] = z[b][a] = value
    fig = _titled(matrix_figure(text.title, z, names, names, x_title="module",
                                y_title="module", colorbar=text.y_title, zmin=0.0, zmax=1.0,
                                height=360 + 20 * len(names)),
                  text, probe, key, f" at step {last}")
    return captioned(fig, text.caption)


def _slice_heatmap(probe: str, key: str, recs: Sequence[Record], text: FigureText) -> Any:
    alphas = sorted({float(r.meta["alpha"]) for r in recs})
    betas = sorted({float(r.meta["beta"]) for r in recs})
    ia, ib = {a: i for i, a in enumerate(alphas)}, {b: i for i, b in enumerate(betas)}
    z: list[list[float | None]] = [[None] * len(alphas) for _ in betas]
    for r in recs:
        z[ib[float(r.meta["beta"])]][ia[float(r.meta["alpha"])]] = (
            r.value if math.isfinite(r.value) else None)
    fig = _titled(matrix_figure(text.title, z, [f"{b:g}" for b in betas],
                                [f"{a:g}" for a in alphas], x_title="α (first direction)",
                                y_title="β (second direction)", colorbar=text.y_title),
                  text, probe, key)
    return captioned(fig, text.caption + " The centre (0, 0) is the final model.")


def write_probe_report(path: str | Path, result: dict[str, Any],
                       records: Sequence[Record], *, standalone: bool = False) -> Path:
    """The report of a probe run; ``result["findings"]`` (claim-like dicts, see
    :mod:`learnscope.analysis.findings`) fill the claims table. plotly.js as in
    :func:`~learnscope.report.html.write_report` (shared below a results folder unless
    ``standalone``)."""
    figures, tables = probe_figures(
        records, (result.get("findings_context") or {}).get("examples"))
    probes = result["config"].get("probes", [])
    tables.insert(0, Table("Probes", ["probe", "class", "cost", "schedule", "parameters"],
                           [[p["label"], p["class"], p["cost"], p["schedule"], p["params"]]
                            for p in probes]))
    timings = result.get("timings", {})
    section = StudySection(
        study=result["study"], title=f"Probe run: {result['study']}", source="learnscope probes",
        run_id=result.get("run_id", ""), verdict=result.get("status", ""),
        config={k: v for k, v in result["config"].items() if k != "probes"}
        | {"steps": result.get("steps"), "epochs": result.get("epochs")},
        claims=list(result.get("findings", [])), figures=figures, tables=tables, findings=True,
        notes=["Findings (the table above): what the records say about this run, each with "
               "the numbers it was read from and the condition it checks; 'condition met' "
               "says whether that condition is true, the statement gives the reading. Findings "
               "whose probe was not attached are absent."]
        + ([f"Findings could not be computed: {result['findings_error']}"]
           if result.get("findings_error") else [])
        + [f"{len(records)} records. Seconds spent per probe: " + ", ".join(
            f"{k} {v:.3g}" for k, v in timings.items())])
    return write_report(path, [section], title=f"learnscope probes: {result['study']}",
                        standalone=standalone)
