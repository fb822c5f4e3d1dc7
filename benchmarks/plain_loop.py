"""The plain single-process PEFT loops the benchmarks measure the tool against (what a user would write without it).

- :class:`PlainLoop` (``bench_worker.py``): one client job on MiniLM: ``get_peft_model`` with one LoRA adapter,
  copy the client's initial A/B/head in, new AdamW, the worker's batches, collect the trained tensors.
- :class:`PlainFederatedLoop` (``bench_driver.py``): a whole OpenFedLLM-style federated Fed-PLoRA run in one
  process with one PEFT model (one adapter per client rank), the driver's sampling, client starts, fold,
  aggregation and evaluation.

Both train with :func:`train_steps`: the worker's batches (``workers.local_training.batch_indices`` on the
client's seed), tokenized per batch, ``model(**batch, labels=...).loss``, AdamW.
"""

from __future__ import annotations

import time

import torch

from core.rng import generator
from core.wire import ClientStart, ClientUpdate, ModuleSpec
from orchestrator.config import RunConfig
from orchestrator.methods import build_method
from orchestrator.ranks import assign_ranks
from workers.local_training import batch_indices
from workers.resources import torch_threads


def train_steps(model, tokenizer, params: list, examples: list, cfg: RunConfig, seed: int) -> list[float]:
    """``cfg.train.total_steps`` AdamW steps of ``params`` on the worker's batches of ``examples``; the losses."""
    tcfg = cfg.train
    order = torch.Generator(device="cpu").manual_seed(int(seed))
    torch.manual_seed(int(seed))
    optimizer = torch.optim.AdamW(params, lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    batches = batch_indices(len(examples), tcfg.batch_size, order)
    model.train()
    losses = []
    for _ in range(tcfg.total_steps(len(examples))):
        rows = [examples[i] for i in next(batches)]
        enc = tokenizer([ex.text for ex in rows], padding=True, truncation=True, max_length=cfg.data.max_length,
                        return_tensors="pt")
        loss = model(**enc, labels=torch.tensor([ex.label for ex in rows], dtype=torch.long)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses


class TimedRounds:
    """A federated run driven round by round: ``step`` runs ``run_round`` and keeps its caller-side time."""

    def __init__(self) -> None:
        self.step_s: list[float] = []
        self.records: list[dict] = []

    def run_round(self) -> dict:
        raise NotImplementedError

    def step(self) -> float:
        t0 = time.perf_counter()
        record = self.run_round()
        dt = time.perf_counter() - t0
        self.step_s.append(dt)
        self.records.append(record)
        return dt


# ---- one client job (bench_worker.py) ------------------------------------------------------------------------
class PlainLoop:
    """A plain single-process PEFT LoRA fine-tuning loop on MiniLM (what a user would write without the tool)."""

    def __init__(self, cfg: RunConfig, targets: list[str], rank: int, num_labels: int):
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from workers.models import _resolve_source

        hf_logging.set_verbosity_error()
        source = _resolve_source(cfg.model.name)
        self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        base = AutoModelForSequenceClassification.from_pretrained(source, num_labels=num_labels,
                                                                  local_files_only=True)
        self.model = get_peft_model(base, LoraConfig(task_type="SEQ_CLS", r=rank, lora_alpha=rank,
                                                     lora_dropout=cfg.train.lora_dropout,
                                                     target_modules=["query", "value"]))
        self.cfg = cfg
        params = dict(self.model.named_parameters())
        self.lora = {m: (params[f"base_model.model.{m}.lora_B.default.weight"],
                         params[f"base_model.model.{m}.lora_A.default.weight"]) for m in targets}
        self.head = {k: v for k, v in params.items() if ".modules_to_save.default." in k}
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]

    @torch.no_grad()
    def reset(self, start: ClientStart) -> None:
        """Copy the client's initial adapter and head in (the start of every federated client job)."""
        for m, (B, A) in self.lora.items():
            init = start.adapters["main"][m]
            B.copy_(init.B)
            A.copy_(init.A)
        for name, p in self.head.items():
            p.copy_(start.head[_head_key(name)])

    def job(self, start: ClientStart, examples: list) -> dict:
        """Reset, train ``local_steps`` steps on the same batches as the worker, collect the trained tensors."""
        t0 = time.perf_counter()
        self.reset(start)
        losses = train_steps(self.model, self.tokenizer, self.trainable, examples, self.cfg, start.seed)
        trained = {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}
        return {"seconds": time.perf_counter() - t0, "loss": sum(losses) / len(losses), "steps": len(losses),
                "n_tensors": len(trained)}


def _head_key(peft_name: str) -> str:
    """``base_model.model.classifier.modules_to_save.default.weight`` -> ``classifier.weight``."""
    head, rest = peft_name.split("base_model.model.", 1)[1].split(".modules_to_save.default.")
    return f"{head}.{rest}"


# ---- a whole federated run (bench_driver.py) -----------------------------------------------------------------
class PlainFederatedLoop(TimedRounds):
    """OpenFedLLM-style federated Fed-PLoRA in one process with one PEFT model.

    One PEFT model (``get_peft_model`` on the run's seeded model, one LoRA adapter per client rank, the
    classifier in ``modules_to_save``); each round: the driver's sampled clients (stream (seed, "sample",
    round)), for each client the Fed-PLoRA ``client_start``, the unselected slots folded into the base weights,
    the adapter and head set, the same batches trained (same seeds), the factors collected; then
    ``method.aggregate``; evaluation on the global test set at the driver's rounds. Runs on ``threads`` torch
    threads.
    """

    def __init__(self, label: str, cfg: RunConfig, threads: int):
        from peft import LoraConfig, get_peft_model

        from workers.models import head_state, load_model
        from workers.partition import load_federated

        super().__init__()
        self.label, self.cfg, self.threads = label, cfg, threads
        t0 = time.perf_counter()
        with torch_threads(threads):
            self.data = load_federated(cfg.data, cfg.seed)
            loaded = load_model(cfg.model, self.data.task, self.data.num_labels, cfg.seed)  # same seeded model
            self.tokenizer = loaded.tokenizer
            modules = dict(loaded.model.named_modules())
            specs = [ModuleSpec(m, modules[m].out_features, modules[m].in_features) for m in loaded.targets]
            self.ranks = assign_ranks(cfg.ranks, self.data.num_clients, cfg.seed)
            self.method = build_method(cfg.method, specs, self.ranks, cfg.ranks.max_rank, cfg.seed)
            self.state = self.method.init_global(head_state(loaded))
            short = sorted({m.rsplit(".", 1)[-1] for m in loaded.targets})
            scale = self.method.scale
            names = [f"r{r}" for r in sorted(set(self.ranks))]
            self.model = None
            for r in sorted(set(self.ranks)):
                lcfg = LoraConfig(task_type="SEQ_CLS", r=r, lora_alpha=scale * r, lora_dropout=cfg.train.lora_dropout,
                                  target_modules=short)
                if self.model is None:
                    self.model = get_peft_model(loaded.model, lcfg, adapter_name=f"r{r}")
                else:
                    self.model.add_adapter(f"r{r}", lcfg)
            self.layers = {m: self.model.get_submodule(f"base_model.model.{m}") for m in loaded.targets}
            for layer in self.layers.values():
                for n in names:
                    layer.scaling[n] = float(scale)
            self.w0 = {m: layer.base_layer.weight.detach().clone() for m, layer in self.layers.items()}
            self.head_names = loaded.head_names  # e.g. classifier.weight, classifier.bias
            params = dict(self.model.named_parameters())
            self.head_of = {n: {h: params[self._wrapped(h, f"modules_to_save.{n}")] for h in self.head_names}
                            for n in names}
            self.head_original = {h: params[self._wrapped(h, "original_module")] for h in self.head_names}
        self.t_startup = time.perf_counter() - t0
        self.round = 0

    @staticmethod
    def _wrapped(head_param: str, inner: str) -> str:
        module, leaf = head_param.rsplit(".", 1)
        return f"base_model.model.{module}.{inner}.{leaf}"

    @torch.no_grad()
    def _fold(self, deltas: dict) -> None:
        for m, layer in self.layers.items():
            d = deltas.get(m)
            w = layer.base_layer.weight
            w.copy_(self.w0[m] if d is None else self.w0[m] + d.dense(torch.float32))

    def client_job(self, start: ClientStart, examples: list) -> ClientUpdate:
        t0 = time.perf_counter()
        name = f"r{start.rank}"
        self.model.set_adapter(name)
        self._fold(start.fold)
        with torch.no_grad():
            for m, layer in self.layers.items():
                init = start.adapters["main"][m]
                layer.lora_A[name].weight.copy_(init.A)
                layer.lora_B[name].weight.copy_(init.B)
            for h, p in self.head_of[name].items():
                p.copy_(start.head[h])
        params = [p for p in self.model.parameters() if p.requires_grad]
        losses = train_steps(self.model, self.tokenizer, params, examples, self.cfg, start.seed)
        factors = {m: (layer.lora_B[name].weight.detach().clone(), layer.lora_A[name].weight.detach().clone())
                   for m, layer in self.layers.items()}
        head = {h: p.detach().clone() for h, p in self.head_of[name].items()}
        return ClientUpdate(start.client_id, start.round, {"main": factors}, len(examples),
                            sum(losses) / len(losses), head, time.perf_counter() - t0, len(losses),
                            tuple(start.upload))

    @torch.no_grad()
    def evaluate(self) -> dict:
        import torch.nn.functional as F

        self._fold(self.method.global_delta(self.state))
        for h, p in self.head_original.items():
            p.copy_(self.state.head()[h])
        examples = self.data.global_test
        correct, loss_sum, size = 0, 0.0, self.cfg.train.eval_batch_size
        with self.model.disable_adapter():
            for i in range(0, len(examples), size):
                rows = examples[i:i + size]
                enc = self.tokenizer([ex.text for ex in rows], padding=True, truncation=True,
                                     max_length=self.cfg.data.max_length, return_tensors="pt")
                y = torch.tensor([ex.label for ex in rows])
                logits = self.model(**enc).logits.float()
                loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
                correct += int((logits.argmax(-1) == y).sum())
        return {"accuracy": correct / len(examples), "eval_loss": loss_sum / len(examples)}

    def run_round(self) -> dict:
        with torch_threads(self.threads):
            t, cfg = self.round, self.cfg
            perm = torch.randperm(self.data.num_clients, generator=generator(cfg.seed, "sample", t))
            clients = sorted(perm[: cfg.clients_per_round].tolist())
            starts = [self.method.client_start(self.state, c, t) for c in clients]
            updates = [self.client_job(s, self.data.clients[s.client_id].train) for s in starts]
            self.state = self.method.aggregate(self.state, starts, updates).state
            self.round = t + 1
            record = {"round": t + 1, "train_loss": sum(u.train_loss * u.n_examples for u in updates) /
                      sum(u.n_examples for u in updates), "t_client_compute_sum": sum(u.compute_seconds for u in updates)}
            if self.round % cfg.eval_every == 0 or self.round == cfg.rounds:
                record.update(self.evaluate())
        return record

    def finish(self) -> dict:
        self.t_finish = self.t_close = 0.0
        return {}
