"""Layer-similarity probe: how far each layer is from its final representation (CKA / SVCCA),
and how similar the layers are to each other."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from learnscope.measures.cka import cka_matrix, linear_cka, linear_cka_to
from learnscope.measures.svcca import svcca
from learnscope.probes.base import LayerProbe, ProbeContext
from learnscope.probes.checks import check_bool, check_choice, check_number, check_schedule
from learnscope.probes.schedule import Schedule, log_spaced
from learnscope.store.records import Record

__all__ = ["LayerSimilarityProbe"]

_METHODS = ("cka", "svcca")


class LayerSimilarityProbe(LayerProbe):
    """Per layer: the similarity of its representation at every checkpoint to its representation
    at the end of training (``similarity_to_final``), and the first checkpoint step at which that
    similarity reaches ``threshold`` (``steps_to_threshold``: the "networks converge bottom up"
    quantity). With ``pairs=True``, also the layer-by-layer similarity matrix at every checkpoint
    (``layer_similarity``, upper triangle, one record per pair).

    Similarity is linear CKA (biased, or the unbiased HSIC estimator of minibatch CKA) or SVCCA
    (mean canonical correlation after keeping the top singular directions that explain
    ``variance_threshold`` of the variance). All values are computed on the scope's probe data.

    Records (keys, meta):

    * ``similarity_to_final``: ``{"layer", "checkpoint_step", "method", ...}``, emitted in
      ``finish`` for every checkpoint (the final state is always one, with similarity 1);
      ``meta["checkpoint_step"]`` makes the scope store it at that step.
    * ``steps_to_threshold``: ``{"layer", "threshold", "method", ...}``, emitted in ``finish``;
      the value is a step number (the final step when no earlier checkpoint reaches it).
    * ``layer_similarity``: ``{"layer_a", "layer_b", "method", ...}`` at every checkpoint, from
      one :func:`~learnscope.measures.cka.cka_matrix` call (``method="cka"``) or one
      :func:`~learnscope.measures.svcca.svcca` call per pair (``method="svcca"``).

    A layer whose activations are constant (e.g. all dead ReLUs) or non-finite has no defined
    similarity: its values are NaN with ``meta["note"]``.

    Memory: the final state is only known when the scope closes, so the activations of every
    checkpoint are kept until then, on the CPU as ``dtype``: ``n x (sum of layer widths) x
    checkpoints x bytes`` (e.g. 512 examples, 4 layers of 256 units, 12 checkpoints, float32:
    25 MB). Keep the probe data small (a few hundred examples) and the schedule sparse.

    Cost: forward (uses the scope's shared capture pass; CKA is O(n^2 width) per layer).
    Sources: Raghu et al. 2017 (SVCCA; "networks converge to final representations from the
    bottom up"); Kornblith et al. 2019 (linear CKA); Nguyen, Raghu & Kornblith 2021 (unbiased
    HSIC / minibatch CKA).

    Args:
        layers: module names whose outputs are compared; ``None`` means
            :func:`~learnscope.probes.base.default_layers` (the activation modules).
        schedule: when to store a checkpoint.
        method: ``"cka"`` (linear CKA) or ``"svcca"``.
        unbiased: CKA with the unbiased HSIC estimator (needs >= 4 examples); CKA only.
        variance_threshold: fraction of variance SVCCA keeps, in (0, 1]; SVCCA only.
        pairs: also emit the layer-by-layer similarity matrix at every checkpoint.
        dtype: floating dtype the stored activations are kept in (float32 halves the memory of
            float64; the similarity itself is computed in float64).
        threshold: the similarity-to-final level that ``steps_to_threshold`` looks for.
    """

    name = "layer_similarity"
    cost = "forward"
    source = "Raghu et al. 2017; Kornblith et al. 2019; Nguyen, Raghu & Kornblith 2021"
    needs_activations = True

    def __init__(self, layers: Sequence[str] | None = None, *, schedule: Schedule | None = None,
                 method: str = "cka", unbiased: bool = False, variance_threshold: float = 0.99,
                 pairs: bool = True, dtype: torch.dtype = torch.float32,
                 threshold: float = 0.9) -> None:
        self.layer_names = self.check_layer_names(layers)
        self.schedule = check_schedule(schedule, log_spaced(3))
        self.method = check_choice(method, "method", _METHODS)
        self.unbiased = check_bool(unbiased, "unbiased")
        if method == "svcca" and unbiased:
            raise ValueError("unbiased applies to method='cka' only")
        self.variance_threshold = check_number(variance_threshold, "variance_threshold",
                                               low=0.0, high=1.0, low_open=True)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating torch dtype, got {dtype!r}")
        self.pairs = check_bool(pairs, "pairs")
        self.dtype = dtype
        self.threshold = check_number(threshold, "threshold")
        self._resolved: list[str] = []
        # step -> (epoch, {layer: activations as `dtype` on the CPU})
        self._checkpoints: dict[int, tuple[int, dict[str, torch.Tensor]]] = {}

    # -- configuration ---------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        out = super().params()
        out["dtype"] = str(self.dtype).removeprefix("torch.")
        return out

    def setup(self, model: nn.Module) -> None:
        self._resolved = self.resolve_layers(model)
        self._checkpoints = {}

    def _method_meta(self) -> dict[str, Any]:
        if self.method == "cka":
            return {"method": "cka", "unbiased": self.unbiased}
        return {"method": "svcca", "variance_threshold": self.variance_threshold}

    # -- measuring -------------------------------------------------------------------------
    def _activations(self, ctx: ProbeContext) -> dict[str, torch.Tensor]:
        ctx.check_data("LayerSimilarityProbe")
        acts = {}
        for name in self._resolved:
            if name not in ctx.activations:
                raise ValueError(f"LayerSimilarityProbe: layer {name!r} produced no output in "
                                 "the forward pass")
            acts[name] = ctx.activations[name].detach().to("cpu", self.dtype, copy=True)
        if acts:
            n = next(iter(acts.values())).shape[0]
            need = 4 if (self.method == "cka" and self.unbiased) else 2
            if n < need:
                raise ValueError(f"LayerSimilarityProbe ({self._method_meta()}) needs at least "
                                 f"{need} probe examples, got {n}")
        return acts

    def measure(self, ctx: ProbeContext) -> list[Record]:
        acts = self._activations(ctx)
        if not acts:
            return []
        self._checkpoints[ctx.step] = (ctx.epoch, acts)
        return self._pair_records(acts) if self.pairs else []

    def finish(self, ctx: ProbeContext) -> list[Record]:
        final = self._activations(ctx)
        if not final:
            return []
        recs: list[Record] = []
        if self.pairs and ctx.step not in self._checkpoints:
            recs += self._pair_records(final)
        # The final state is a checkpoint too (its similarity to itself is 1). When the last
        # step was already measured, that checkpoint keeps the epoch it was measured in.
        epoch = self._checkpoints[ctx.step][0] if ctx.step in self._checkpoints else ctx.epoch
        self._checkpoints[ctx.step] = (epoch, final)
        method_meta = self._method_meta()
        first_hit: dict[str, int | None] = dict.fromkeys(self._resolved)
        undefined: dict[str, str] = {}
        steps = sorted(self._checkpoints)
        to_final = {layer: self._to_final([self._checkpoints[s][1][layer] for s in steps],
                                          final[layer]) for layer in self._resolved}
        for k, step in enumerate(steps):
            epoch = self._checkpoints[step][0]
            for layer in self._resolved:
                value, extra = to_final[layer][k]
                meta = {"layer": layer, "checkpoint_step": step, "epoch": epoch,
                        **method_meta, **extra}
                recs.append(Record("similarity_to_final", value, meta=meta))
                if "note" in extra:
                    undefined.setdefault(layer, extra["note"])
                elif first_hit[layer] is None and value >= self.threshold:
                    first_hit[layer] = step
        for layer in self._resolved:
            meta = {"layer": layer, "threshold": self.threshold, **method_meta}
            hit = first_hit[layer]
            if hit is None:
                note = undefined.get(layer, "no checkpoint reached the threshold")
                recs.append(Record("steps_to_threshold", math.nan, meta=meta | {"note": note}))
            else:
                recs.append(Record("steps_to_threshold", float(hit), meta=meta))
        self._checkpoints = {}
        return recs

    def _to_final(self, xs: list[torch.Tensor], final: torch.Tensor
                  ) -> list[tuple[float, dict[str, Any]]]:
        """Each checkpoint's similarity to the final state (for CKA, the final state's own
        terms are computed once: ``linear_cka_to``)."""
        if self.method != "cka":
            return [self._similarity(x, final) for x in xs]
        try:
            values = linear_cka_to(xs, final, unbiased=self.unbiased)
        except ValueError as e:  # the final state itself is constant or non-finite
            return [(math.nan, {"note": str(e)})] * len(xs)
        return [(v, {}) if not math.isnan(v) else self._similarity(x, final)
                for x, v in zip(xs, values, strict=True)]

    def _similarity(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, dict[str, Any]]:
        try:
            if self.method == "cka":
                return linear_cka(x, y, unbiased=self.unbiased), {}
            r = svcca(x, y, variance_threshold=self.variance_threshold)
            return r.mean_correlation, {"kept_dims": list(r.kept_dims)}
        except ValueError as e:  # constant or non-finite activations: undefined
            return math.nan, {"note": str(e)}

    def _pair_records(self, acts: dict[str, torch.Tensor]) -> list[Record]:
        names = list(acts)
        method_meta = self._method_meta()
        recs: list[Record] = []
        if len(names) < 2:
            return recs
        if self.method == "cka":
            values, notes = self._cka_pairs(names, acts)
            for i in range(len(names)):
                for j in range(i + 1, len(names)):
                    meta = {"layer_a": names[i], "layer_b": names[j], **method_meta}
                    note = notes.get(names[i]) or notes.get(names[j])
                    if note:
                        meta["note"] = note
                    recs.append(Record("layer_similarity", values[i][j], meta=meta))
            return recs
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                value, extra = self._similarity(acts[names[i]], acts[names[j]])
                meta = {"layer_a": names[i], "layer_b": names[j], **method_meta, **extra}
                recs.append(Record("layer_similarity", value, meta=meta))
        return recs

    def _cka_pairs(self, names: list[str], acts: dict[str, torch.Tensor]
                   ) -> tuple[list[list[float]], dict[str, str]]:
        """All-pairs CKA from one ``cka_matrix`` call; layers on which CKA is undefined
        (constant or non-finite activations) get NaN rows with a note."""
        try:
            m = cka_matrix([acts[n] for n in names], unbiased=self.unbiased)
            return m.tolist(), {}
        except ValueError:
            pass
        notes: dict[str, str] = {}
        for n in names:
            try:
                cka_matrix([acts[n]], unbiased=self.unbiased)
            except ValueError as e:
                notes[n] = f"{n}: {e}"
        good = [n for n in names if n not in notes]
        values = [[math.nan] * len(names) for _ in names]
        if good:
            m = cka_matrix([acts[n] for n in good], unbiased=self.unbiased).tolist()
            index = {n: k for k, n in enumerate(good)}
            for i, a in enumerate(names):
                for j, b in enumerate(names):
                    if a in index and b in index:
                        values[i][j] = m[index[a]][index[b]]
        return values, notes
