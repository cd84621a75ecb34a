"""The oneDNN ISA decision's pure parts (``ms_transfer.mindspore_backend.onednn``; MindSpore is not imported): both
spellings of the cap, the rule per oneDNN version, the probe's kernels and margin, and a cache that forgets decisions made under an
older rule. That the cap really reaches MindSpore's oneDNN is checked in fresh processes by tests/test_imports.py."""
from __future__ import annotations

import pytest

from ms_transfer.mindspore_backend import onednn


def test_the_cap_is_written_under_both_spellings_and_the_users_either_one_is_read():
    assert onednn.cap_environ("AVX2") == {"ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2"}
    assert onednn.user_isa({}) is None
    assert onednn.user_isa({"DNNL_MAX_CPU_ISA": "SSE41"}) == "SSE41"   # oneDNN 2.2's only spelling
    assert onednn.user_isa({"ONEDNN_MAX_CPU_ISA": "AVX2"}) == "AVX2"
    # both set: oneDNN 3's order (ONEDNN_ first); an empty value counts as unset, as in oneDNN's getenv
    assert onednn.user_isa({"ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "SSE41"}) == "AVX2"
    assert onednn.user_isa({"ONEDNN_MAX_CPU_ISA": "", "DNNL_MAX_CPU_ISA": "SSE41"}) == "SSE41"


def test_the_rule_caps_onednn_3_and_not_onednn_2():
    assert onednn.rule("3.10.1").isa == "AVX2"   # its uncapped plain-NCHW conv is the reference kernel
    assert onednn.rule(None).isa == "AVX2"       # unknown: the safe side
    assert onednn.rule("2.2.0").isa is None      # a real AVX2 cap measured no faster (BENCHMARKS.md)


GEMM, REF = {"forward_training": "gemm:jit"}, {"forward_training": "jit_uni_ncsp:conv+ref:any"}


@pytest.mark.parametrize("rule_isa, avx2, uncapped, chosen", [
    ("AVX2", (36.4, GEMM), (0.9, REF), "AVX2"),     # oneDNN 3.10 on AVX-512: the reference kernel uncapped
    ("AVX2", (36.4, GEMM), (40.0, REF), "AVX2"),    # a reference kernel is capped whatever one probe's timing said
    (None, (36.4, GEMM), (0.9, REF), "AVX2"),       # whatever the rule said
    ("AVX2", (0.9, REF), (36.4, GEMM), None),       # the other way round: no cap
    ("AVX2", (30.0, GEMM), (34.0, GEMM), "AVX2"),   # the same kernel: timing is load, the rule stands
    (None, (32.8, GEMM), (26.7, GEMM), None),       # oneDNN 2.2 here: a loaded probe's 1.23x for the cap (it cost
                                                    # ResNet50 10-18%) no longer caps
    (None, (95.0, GEMM), (30.0, GEMM), "AVX2"),     # >= 3x: a different class of kernel, whatever its name
    ("AVX2", (30.0, {}), (95.0, {}), None),         # no kernel names logged: timing at the same margin
])
def test_the_kernels_decide_and_timing_only_at_a_large_margin(rule_isa, avx2, uncapped, chosen):
    measured = {"AVX2": {"gflops": avx2[0], "impls": avx2[1]}, "ALL": {"gflops": uncapped[0], "impls": uncapped[1]}}
    assert onednn.probed_choice(rule_isa, measured) == chosen


def test_a_decision_cached_under_an_older_rule_is_not_reused(monkeypatch, tmp_path):
    monkeypatch.setenv("MS_TRANSFER_CACHE", str(tmp_path))
    current = onednn._cache_file("2.2.0")
    assert current.parent == tmp_path / "onednn"
    monkeypatch.setattr(onednn, "RULE_VERSION", onednn.RULE_VERSION - 1)
    assert onednn._cache_file("2.2.0") != current


def test_the_probe_interleaves_the_candidates_and_compares_medians(monkeypatch):
    calls = []
    gflops = {"AVX2": iter([30.0, 12.0, 29.0]), "ALL": iter([31.0, 30.0, 10.0])}   # one loaded run each

    def fake_probe(isa):
        calls.append(isa)
        return {"gflops": next(gflops[isa]), "impls": {"forward_training": "gemm:jit"}, "isa": isa}
    monkeypatch.setattr(onednn, "probe", fake_probe)
    measured = onednn.measure(3)
    assert calls == ["AVX2", "ALL", "ALL", "AVX2", "AVX2", "ALL"]   # load drift hits both alike
    assert measured["AVX2"]["gflops"] == 29.0 and measured["ALL"]["gflops"] == 30.0
    assert measured["AVX2"]["runs"] == [30.0, 12.0, 29.0]
    assert onednn.probed_choice(None, measured) is None   # the last pair alone (29 vs 10) would say AVX2
