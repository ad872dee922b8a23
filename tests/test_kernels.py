"""Kernel truth: which SDPA backend runs, which are eligible and why not (measurement `kernels`)."""

import os

import torch
import torch.nn.functional as F
from speed_common import _pick, _run, _study
from torch.nn.attention import SDPBackend, sdpa_kernel

from orca_analysis.instruments.sdpa import (
    SdpaCall,
    backends_ran,
    eligibility,
    profiler_chatter_dropped,
    refusal_reason,
)
from orca_analysis.measurements import MEASUREMENTS
from orca_analysis.results.query import Results

# ---- kernel truth -------------------------------------------------------------------------


def test_profiler_tells_backends_apart():
    class Forced(torch.nn.Module):
        def __init__(self, backend):
            super().__init__()
            self.q = torch.nn.Parameter(torch.randn(1, 2, 8, 4))
            self.backend = backend

        def forward(self, _tokens):
            with sdpa_kernel([self.backend]):
                return F.scaled_dot_product_attention(self.q, self.q, self.q, is_causal=True)

    assert backends_ran(Forced(SDPBackend.MATH), None, train=True) == {"math": 1}
    assert backends_ran(Forced(SDPBackend.FLASH_ATTENTION), None, train=False) == {"flash": 1}


def test_refusal_comes_with_torchs_reason():
    q = torch.randn(1, 2, 16, 8)
    k = torch.randn(1, 2, 8, 16).transpose(-1, -2)  # last-dim stride 16: fused kernels refuse
    call = SdpaCall((q, k, q), {"is_causal": True})
    ok, reason = eligibility(call, "flash", train=False)
    assert not ok and "stride 1" in reason
    assert eligibility(call, "math", train=True) == (True, "")


def test_refusal_reason_keeps_the_forced_backends_section():
    msgs = [  # torch's warnings when a forced CUDA backend is refused (sdp_utils.cpp)
        "Memory efficient kernel not used because: (Triggered internally at sdp_utils.cpp:1.)",
        "Memory efficient attention requires attn_mask stride alignment. (Triggered internally at x.cpp:2.)",
        "Flash attention kernel not used because: (Triggered internally at sdp_utils.cpp:3.)",
        "Flash attention does not support non-null attn_mask. (Triggered internally at x.cpp:4.)",
        "cuDNN attention kernel not used because: (Triggered internally at sdp_utils.cpp:5.)",
        "cuDNN attention has been runtime disabled. (Triggered internally at x.cpp:6.)",
    ]
    assert refusal_reason(msgs, "flash", "err") == "Flash attention does not support non-null attn_mask."
    assert refusal_reason(msgs, "cudnn", "err") == "cuDNN attention has been runtime disabled."
    assert refusal_reason(msgs, "efficient", "err").startswith("Memory efficient attention requires")
    assert refusal_reason([], "flash", "No available kernel. Aborting execution.") == (
        "No available kernel. Aborting execution."
    )


def test_kernels_on_the_tiny_orca_model(base_records):
    _, runs = base_records
    recs = runs["kernels"]
    # depth 2: one SDPA call per layer, the CPU flash kernel (it takes the float ALiBi mask)
    assert [(r.labels, r.value) for r in _pick(recs, "ran_train")] == [({"backend": "flash"}, 2)]
    # on CPU seq 32 is scaled by the kernels cap 32 / max_seq_len 128: 32 * 32 / 128 = 8 tokens
    assert [(r.seq_len, r.value, r.labels) for r in _pick(recs, "seq_len_requested")] == [
        (8, 32, {"cap": 32})
    ]
    assert {r.scale for r in recs if r.seq_len == 8} == {"proxy"}  # a scaled length
    # ALiBi as a dense float mask: 4 heads x 8 x 8 x 4 bytes = 1,024 bytes, is_causal False
    (mask,) = _pick(recs, "sdpa_attn_mask_bytes")
    assert (mask.value, mask.labels, mask.unit) == (1_024, {"mask": "float32 (1, 4, 8, 8)"}, "bytes")
    assert _pick(recs, "sdpa_is_causal")[0].value == 0
    (kv,) = _pick(recs, "sdpa_kv_heads_seen")
    assert (kv.value, kv.note) == (4, "config kv_heads=1")  # the one KV head expanded to 4
    eligible = {r.labels["backend"]: (r.value, r.status) for r in _pick(recs, "eligible_train", status=None)}
    assert eligible == {
        "flash": (1, "ok"),
        "math": (1, "ok"),
        "efficient": (None, "skipped"),
        "cudnn": (None, "skipped"),
    }
    assert "not applicable on cpu" in _pick(recs, "eligible_train", status="skipped", backend="cudnn")[0].note
    enabled = {r.labels["backend"]: r.value for r in _pick(recs, "enabled_by_library")}
    assert enabled == {"flash": 1, "efficient": 1, "cudnn": 0, "math": 1}  # x-transformers' sdp_kwargs
    assert all(r.seq_len is None for r in _pick(recs, "enabled_by_library"))  # not a workload's


def test_a_refused_backend_is_an_ok_zero_with_torchs_reason(monkeypatch):
    from orca_analysis.measurements.kernels import run

    real = run.eligibility

    def refuse_flash(call, backend, train):
        if backend == "flash":
            return False, "Flash attention does not support non-null attn_mask."
        return real(call, backend, train)

    monkeypatch.setattr(run, "eligibility", refuse_flash)
    study = _study()
    recs = _run("kernels", study)
    (flash,) = _pick(recs, "eligible_inference", backend="flash")
    assert (flash.value, flash.note) == (0.0, "Flash attention does not support non-null attn_mask.")
    (row,) = MEASUREMENTS["kernels"].shown.section(Results.from_records(recs), study).tables[0].rows
    # eligible, refused, not applicable
    assert row[5:8] == ["math", "flash", "efficient, cudnn"]


def test_without_flash_attention_no_sdpa_call_is_a_result():
    study = _study(["attn_flash=false"])
    recs = _run("kernels", study)
    assert {r.status for r in _pick(recs, "enabled_by_library", status=None)} == {"skipped"}
    (none,) = _pick(recs, "ran_train")
    assert (none.labels, none.value, none.status) == ({"backend": "none"}, 0, "ok") and "einsum" in none.note
    assert not _pick(recs, "eligible_train", status=None)  # no call to force a backend on
    (skip,) = _pick(_run("attention_speed", study), "sdpa_forward_time", status=None)
    assert skip.status == "skipped" and "no scaled_dot_product_attention call" in skip.note


def test_kernels_section(base_records):
    study, runs = base_records
    section = MEASUREMENTS["kernels"].shown.section(Results.from_records(runs["kernels"]), study)
    (table,) = section.tables
    assert table.title == "Which attention kernel ran, and which were eligible"
    # 1,024 bytes -> si: 1.02 kB
    assert table.rows == [
        [
            "base",
            "cpu",
            "32",
            "8",
            "flash x2",
            "flash, math",
            "-",
            "efficient, cudnn",
            "float32 (1, 4, 8, 8), 1.02 kB",
        ]
    ]
    empty = MEASUREMENTS["kernels"].shown.section(Results.from_records([]), study)
    assert not empty.tables and "no `kernels` results" in empty.missing


def test_profiler_chatter_is_dropped_and_other_stderr_kept(capfd):
    with profiler_chatter_dropped():
        os.write(2, b"USDT:2026-12-01 SyncActivityProfilerHandler.cpp:52] profiler_start\nkeep me\n")
    err = capfd.readouterr().err
    assert "keep me" in err and "USDT:" not in err
