"""The benchmark harness runs end to end (``--quick``, the CI smoke run); numbers are reported, never asserted."""
import json

import pytest

from ms_transfer.bench import QUICK, format_report, machine_info, main


def test_quick_run_reports_every_engine_and_workload(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--quick", "--no-extras", "--steps", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = {(m["engine"], m["workload"]): m for m in report["measurements"]}
    for engine in QUICK["engines"]:
        for workload in ("inference", "finetune", "fixed_feature"):
            m = rows[(engine, workload)]
            assert m["images_per_s"] > 0 and m["first_step_s"] > 0
            assert m["vs_torch"] > 0 and 0 < m["vs_limit"]
    assert rows[("torch", "finetune")]["vs_torch"] == 1.0
    assert set(report["peak_rss_mb"]) == set(QUICK["engines"]) and all(v > 100 for v in report["peak_rss_mb"].values())
    text = capsys.readouterr().out
    assert "vs torch" in text and text.strip() == format_report(report).strip()


def test_a_seed_network_runs_at_its_own_size_and_channels():
    """fashion_cnn (one channel, 28 px) through both frameworks' workers (in this process, one step each): the
    workers fed every arch three-channel images until the seeds' row was measured."""
    from ms_transfer.bench import BenchConfig, _mindspore_worker, _torch_worker, check_arch
    from ms_transfer.mindspore_backend.context import set_context

    values = {"arch": "fashion_cnn"}
    assert check_arch(values) is None and values["image_size"] == 28
    cfg = BenchConfig(arch="fashion_cnn", image_size=28, batch=4, steps=1, workloads=("inference", "cached_head"))
    try:
        results = [_torch_worker(cfg), _mindspore_worker(cfg, "graph")]
    finally:
        set_context("pynative", "CPU")
    for result in results:
        assert set(result) == {"inference", "cached_head"} and all(r["seconds"] > 0 for r in result.values())


@pytest.mark.parametrize("args, message", [(["--arch", "fashion_cnn", "--image-size", "64"], "takes 28 px"),
                                           (["--arch", "digit_adder"], "2 images per example")])
def test_a_seed_network_it_cannot_time_is_refused(capsys, args, message):
    assert main([*args, "--no-extras"]) == 2
    assert message in capsys.readouterr().err


def test_conversion_extra_runs_in_a_fresh_process():
    """The extras' conversion timing converts a torchvision .pth in a process that imported nothing else of the
    project (it needs the .pth reader registered: ``bench --quick`` failed there while this test suite, which
    imports it elsewhere, passed)."""
    import subprocess
    import sys
    code = "from ms_transfer.bench import time_conversion; print(time_conversion())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout.strip().splitlines()[-1]) > 0


def test_kernels_report_both_frameworks_per_stage_and_per_operator(tmp_path, capsys):
    """``--kernels`` (where a small model's MindSpore time goes): every stage's convolution timed in both
    frameworks, each in its own process, and the one-operator launch cost; the printed table is the JSON's."""
    from ms_transfer.bench_kernels import format_kernels, stage_shapes
    assert stage_shapes(64) == [(64, 16), (128, 8), (256, 4), (512, 2)]
    out = tmp_path / "kernels.json"
    assert main(["--kernels", "--image-size", "16", "--batch-size", "2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert (report["image_size"], report["batch"]) == (16, 2)
    for engine in ("torch", "mindspore"):
        got = report["kernels"][engine]
        assert [(r["channels"], r["side"]) for r in got["conv"]] == stage_shapes(16)
        assert all(r["ms"] > 0 for r in got["conv"]) and got["op_ms"] > 0
    text = capsys.readouterr().out
    assert format_kernels(report["kernels"], 16, 2) in text and "MS / torch" in text


def test_machine_info_and_compute_limit():
    info = machine_info()
    assert info["cores"] >= 1 and info["cpu"]
    assert info["cpu_mhz"] > 0  # read from /proc/cpuinfo (the project runs on Linux x86_64)
    per_cycle = 64 if info["avx512f"] else 32  # 2 FMA units x 16 or 8 fp32 lanes x 2
    assert info["peak_gflops_fp32"] == info["cores"] * info["cpu_mhz"] / 1000 * per_cycle


@pytest.mark.slow
def test_data_parallel_bench_reports_one_process_and_two_ranks_of_both_frameworks(tmp_path, capsys):
    """``--data-parallel 2``: four launches (~1 min at this size); slow, recorded in BENCHMARKS.md."""
    out = tmp_path / "dp.json"
    assert main(["--data-parallel", "2", "--arch", "resnet18", "--image-size", "32", "--batch", "2", "--steps", "2",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    results = report["data_parallel"]
    assert set(results) == {"torch x1", "torch x2 (torchrun)", "mindspore x1", "mindspore x2 (msrun)"}
    for engine, r in results.items():
        assert r["images_per_s"] > 0 and r["world"] == (2 if "x2" in engine else 1), (engine, r)
        assert (r["allreduce_s"] > 0) == (r["world"] == 2) and r["grad_mb"] > 40   # ResNet18: 11.7M parameters
    assert "all-reduce ms" in capsys.readouterr().out


# --- python -m ms_transfer.bench --parity (ms_transfer/bench_parity.py): the pieces, without a parity run ----------

def test_parity_cost_sampler_counts_the_whole_process_tree():
    """A child that starts a grandchild holding 300 MB: the peak includes the grandchild (~1.5 s)."""
    import sys

    from ms_transfer.bench_parity import run_sampled
    grandchild = "import time; a = bytearray(300 * 2**20); time.sleep(1.0)"
    child = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {grandchild!r}], check=True)"
    run = run_sampled([sys.executable, "-c", child])
    assert run["exit"] == 0 and run["seconds"] >= 1.0
    assert run["peak_rss"] >= 300 * 2**20, run


def test_parity_cost_need_and_table():
    """The need is 48 bytes per parameter (weights, gradients, momentum: MindSpore and torch float32, torch float64);
    ResNet18 with 1000 classes has torchvision's 11,689,512 parameters."""
    from ms_transfer.bench_parity import format_parity_table, need_bytes, parameter_count
    n = parameter_count("resnet18", 1000)
    assert n == 11_689_512 and need_bytes(n) == 48 * n
    row = {"arch": "resnet18", "image_size": 64, "num_classes": 10, "mode": "graph", "passed": True, "exit": 0,
           "seconds": 41.2, "peak_rss": 3 * 2**30, "need": 2**30}
    table = format_parity_table([row, {**row, "mode": "pynative", "passed": False, "exit": 1}], "Some CPU")
    assert table.splitlines()[0] == "Parity cost (Some CPU)"
    assert "| resnet18 | 64 | 10 | graph | pass | 41 | 3.00 | 1.00 | 3.0x |" in table
    assert "| pynative | FAIL |" in table
    fixed = {**row, "imports": 2**30}   # the imports' peak: the column is what the comparison adds, against the need
    table = format_parity_table([fixed], "Some CPU")
    assert "imports alone (torch, torchvision, MindSpore, the comparison): peak RSS 1.00 GiB" in table
    assert "| resnet18 | 64 | 10 | graph | pass | 41 | 3.00 | 1.00 | 3.0x | 2.0x |" in table


def test_parity_cost_refuses_a_case_it_does_not_have(capsys):
    assert main(["--parity", "--arch", "resnet18", "--image-size", "99"]) == 2
    assert "no parity case matches" in capsys.readouterr().err
