"""Each prompt's text encoding computed once: the text encoders are frozen, and a pool of prompts is sampled over
and over (a T5-XXL or Gemma pass per batch is most of a step's text cost). Rows are kept on the CPU, least
recently used first out beyond `limit_mb`; a batch is put together from its prompts' rows and, under guidance,
the null prompt's row repeated."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch

NULL = object()  # the key of the null (unconditional) prompt's row


def _rows(value, start: int, stop: int):
    """Rows start..stop of a batched value (a tensor, or a tuple of them), detached onto the CPU."""
    if isinstance(value, tuple):
        return tuple(_rows(v, start, stop) for v in value)
    return value[start:stop].detach().to("cpu", copy=True)


def _cat(parts: list, device):
    if isinstance(parts[0], tuple):
        return tuple(_cat([p[k] for p in parts], device) for k in range(len(parts[0])))
    return torch.cat(parts).to(device)


def _nbytes(value) -> int:
    return sum(_nbytes(v) for v in value) if isinstance(value, tuple) else value.numel() * value.element_size()


class TextCache:
    """`encode(prompts, guidance) -> Conditioning` through `encode_batch`, one row per prompt computed once."""

    def __init__(self, encode_batch: Callable, device_of: Callable, limit_mb: float):
        self.encode_batch, self.device_of = encode_batch, device_of
        self.limit = int(limit_mb * 2**20)
        self.rows: OrderedDict = OrderedDict()  # key -> {name: row}
        self.shared: dict = {}
        self.size = 0
        self.encoded = 0  # prompts that went through the text encoders
        self.no_guidance = False  # the family conditions on guidance otherwise (Flux.1-dev): no null prompt

    def encode(self, prompts: list[str], guidance: bool):
        from itercomp.finetune.adapters import Conditioning

        prompts = list(prompts)
        guidance = guidance and not self.no_guidance
        missing = [p for p in dict.fromkeys(prompts) if p not in self.rows]
        if guidance and NULL not in self.rows and not missing:
            missing = prompts[:1]  # a guided call also gives the null prompt's row
        if missing:
            cond = self.encode_batch(missing, guidance)
            n = len(missing)
            for i, prompt in enumerate(missing):
                self._store(prompt, {k: _rows(v, i, i + 1) for k, v in cond.batched.items()})
            if cond.guided:
                self._store(NULL, {k: _rows(v, n, n + 1) for k, v in cond.batched.items()})
            elif guidance:
                self.no_guidance, guidance = True, False
            self.shared = cond.shared
            self.encoded += n
        keys = [*prompts, *([NULL] * len(prompts) if guidance else [])]
        device = self.device_of()
        batched = {name: _cat([self.rows[k][name] for k in keys], device) for name in self.rows[keys[0]]}
        for key in keys:
            self.rows.move_to_end(key)
        while self.size > self.limit and len(self.rows) > 1:  # after the batch is built: its rows were needed
            _, old = self.rows.popitem(last=False)
            self.size -= sum(_nbytes(v) for v in old.values())
        return Conditioning(batched, dict(self.shared), guided=guidance)

    def _store(self, key, row: dict) -> None:
        if key not in self.rows:
            self.rows[key] = row
            self.size += sum(_nbytes(v) for v in row.values())
