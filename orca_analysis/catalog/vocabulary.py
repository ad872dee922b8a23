"""The words a record or a claim is made of, each declared once: how a number was obtained (Method), what it
is a number of (Scale), how its run ended (Status), why a record holds no value where code acts on the why (Cause),
how a probe case ended (ProbeOutcome), and what a claim's test concluded (Verdict).

They are StrEnums: a member is its word, so records, the store, JSON and the YAML catalogues keep the plain
string, and code names the member (`Method.SIMULATED`), which a typo turns into an error at import.
"""

from __future__ import annotations

from enum import StrEnum

# What a test that a scale cannot power is: a verdict of the claims, the status of a remedy's quality gate, and
# the opening words of a skipped training record's note share these words.
NOT_TESTABLE_AT_THIS_SCALE = "not testable at this scale"


class Method(StrEnum):
    """How a value was obtained (a metric declares which of these produce it)."""

    # counted or derived without running the model
    CLOSED_FORM = "closed_form"  # a formula of formulas/
    COUNTER = "counter"  # torch's operator counter (FlopCounterMode), or the library's own parameter count
    COUNTER_PLAIN = "counter_plain"  # FlopCounterMode as shipped
    FVCORE = "fvcore"  # fvcore, completed with the operators it leaves out
    FVCORE_PLAIN = "fvcore_plain"  # fvcore as shipped
    KAPLAN_6N = "kaplan_6n"  # 6N per token (Kaplan et al. 2020)
    PALM = "palm"  # 6N + 12LHQT per token (Chowdhery et al. 2022, appendix B)
    LIBRARY_COUNT = "library_count"
    SIMULATED = "simulated"  # a walk on fake tensors (instruments/memtrack.py)
    PREDICTED = "predicted"  # a forecast from a walk and a device's peaks (instruments/roofline.py)
    DERIVED = "derived"  # computed from other records
    CPU_SCALED = "cpu_scaled"
    DATASHEET = "datasheet"
    # read off the built model or its calls
    BUILT_MODEL = "built_model"
    BUILD_DIFF = "build_diff"
    CAPTURED_CALL = "captured_call"
    X_TRANSFORMERS_SDP_KWARGS = "x_transformers_sdp_kwargs"
    TORCH_GET_NUM_THREADS = "torch.get_num_threads"
    # measured on the model
    MEASURED = "measured"
    MEASURED_MEDIAN = "measured_median"
    TIMED_TWICE = "timed_twice"
    PROFILER = "profiler"
    FORCED_SDPA_KERNEL = "forced_sdpa_kernel"
    CACHED_VS_FULL_FORWARD = "cached_vs_full_forward"
    COUNT_MODEL = "count_model"
    USEFUL_4BHNND_CAUSAL_HALF = "useful_4bhnnd_causal_half"
    # the utilisation conventions (MFU after PaLM, over the causal pairs; HFU)
    MFU_PALM = "mfu_palm"
    MFU_CAUSAL = "mfu_causal"
    HFU = "hfu"


class Scale(StrEnum):
    """What a value is a number of."""

    ANALYTIC = "analytic"  # a formula, a counter or a simulation
    MEASURED = "measured"  # the model itself
    PROXY = "proxy"  # a smaller model trained in its stead


class Status(StrEnum):
    """How a measurement call ended for a record (a probe that fails is an ok record saying so)."""

    OK = "ok"
    ERROR = "error"
    SKIPPED = "skipped"


class Cause(StrEnum):
    """Why an error or skipped record holds no value, where code acts on the why (a record's `cause`; its note
    says it in words for the reader). Set where the record is made, never read back from the note (but once, for
    records stored before the field: results/legacy.py)."""

    NONE = ""  # nothing acts on it: the note alone says why
    NEEDS_GPU = "needs a GPU"  # this device cannot run it and a GPU can (FlexAttention's CPU backward, ...)
    NOT_TESTABLE = NOT_TESTABLE_AT_THIS_SCALE  # the proxy cannot judge the change (no power at this scale)
    REFUSED = "refused"  # a kernel that exists here refuses these inputs (SDPA's own checks)
    NOT_APPLICABLE = "not applicable"  # the kernel does not exist on this device (CUDA-only)


class ProbeOutcome(StrEnum):
    """How a probe case ended (the `outcome` label of a probe's pass/fail record)."""

    PASS = "pass"  # within the tolerance
    FAIL = "fail"  # beyond it
    CRASH = "crash"  # the probed call raised (a crashing cache is a finding): its exception in the note
    NONE = "n/a"  # skipped: nothing ran (a forced kernel that refuses the call)


class Verdict(StrEnum):
    """What a claim's test concluded, in the report's order."""

    SUPPORTED = "supported"
    QUALIFIED = "qualified"
    CONTRADICTED = "contradicted"
    INCONCLUSIVE = "inconclusive"
    NOT_TESTABLE = NOT_TESTABLE_AT_THIS_SCALE  # the test shows no power here (its positive control)
    NOT_TESTED = "not tested yet"  # its evidence is not measured yet
