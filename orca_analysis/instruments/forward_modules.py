"""The modules running a forward, by torch's ModuleTracker names: what the FLOP counter's ledger
(instruments/flop_counter.py) attributes forward work by."""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook


class ForwardModules:
    """The modules running a forward, named as torch's ModuleTracker names them (`parents`), from forward hooks
    alone. FlopCounterMode's own ModuleTracker also registers a multi-grad hook on every module call's inputs
    and outputs to follow the backward; the ledger files backward work by autograd node instead, and
    FlopCounterMode's total is its "Global" entry, so those hooks only cost time. Mirrors torch 2.13's
    ModuleTracker (utils/module_tracker.py): `_get_mod_name` and the forward halves of its hooks."""

    def __init__(self) -> None:
        self.parents: set[str] = {"Global"}
        self._known: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._seen: weakref.WeakSet = weakref.WeakSet()
        self._handles: list = []

    def _name(self, mod: torch.nn.Module) -> str:
        if mod not in self._known:
            self._known[mod] = type(mod).__name__
        name = self._known[mod]
        if mod not in self._seen:
            for child, sub in mod.named_children():
                self._known[sub] = f"{name}.{child}"
                self._name(sub)
            self._seen.add(mod)
        return name

    def _pre(self, mod: torch.nn.Module, args: Any) -> None:
        self.parents.add(self._name(mod))

    def _post(self, mod: torch.nn.Module, args: Any, out: Any) -> None:
        self.parents.discard(self._name(mod))

    def __enter__(self) -> ForwardModules:
        self._handles = [
            register_module_forward_pre_hook(self._pre),
            register_module_forward_hook(self._post),
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
