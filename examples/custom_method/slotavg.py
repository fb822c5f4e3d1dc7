"""A method of your own in one file: truncation with rank-wise averaging (``method.name: slotavg``).

Client ``i`` of rank ``r_i`` starts from the first ``r_i`` rank slots of the global adapter
(``B: (d, R)``, ``A: (R, k)``), as HETLoRA does (Cho et al., EMNLP 2024). The server then averages each slot
``j`` over the clients that trained it, with data-size weights ``n_i``::

    B[:, j] <- sum_{i in S, r_i > j} n_i B_i[:, j] / sum_{i in S, r_i > j} n_i        (A[j, :] alike)

instead of HETLoRA's zero-padded average over all clients, which pulls the high slots (held only by the
large-rank clients) toward zero. A slot no participant holds keeps its value. The evaluated model is
``W0 + s B A``. This equals Fed-PLoRA's ``selection: fixed, unselected: drop`` ablation with
``weighting: data`` (no fold, per-slot means): ``tests/test_examples.py`` checks that bit for bit.

Use it by listing this file under ``plugins:`` in a run or sweep YAML (``sweep.yaml`` next to this file
does), or with ``--plugin examples/custom_method/slotavg.py`` on ``orchestrator.run`` / ``sweeps.run``.
Every process that resolves method names (the command line, each sweep trial, the Driver actor) imports
it before checking ``method.name``.
"""

from core.wire import ClientStart
from orchestrator.methods import register
from orchestrator.methods.base import FactoredMethod, main_slots, slot_average


@register
class SlotAverage(FactoredMethod):
    """First ``r_i`` slots per client; each slot averaged over the clients that trained it (data weights)."""

    name = "slotavg"

    def client_start(self, state, client_id, round_idx) -> ClientStart:
        common = self.start_common(state, client_id, round_idx)
        slots = list(range(common.rank))  # client i starts from the first r_i slots
        adapters = {m: self.slot_adapter(state, m, slots) for m in self.modules}
        return ClientStart(fold={}, adapters={"main": adapters}, **common.fields())

    def aggregate_adapters(self, state, pairs):
        weights = self.client_weights(pairs)  # method.weighting: data (default) or uniform
        new = state.copy()
        for m in self.modules:
            B_old, A_old = self.factors(state, m)
            ups = [(main_slots(s, m), u.adapters["main"][m], weights[s.client_id]) for s, u in pairs]
            new.tensors[f"{m}/B"] = slot_average(B_old, 1, [(k, B, w) for k, (B, _), w in ups])
            new.tensors[f"{m}/A"] = slot_average(A_old, 0, [(k, A, w) for k, (_, A), w in ups])
        return new, weights
