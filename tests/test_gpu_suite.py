"""``benchmarks/gpu_suite.sh``: the script that measures on a GPU lent for minutes,
checked here so that those minutes are not lost to a typo or to a suite that overruns
a 10-minute call.

* every case's command is accepted by its script's own argument parser, and the cases
  are the documented GPU targets (its models and batch sizes, cifar10_fast to 94%);
* the time budget: a case runs with what is left and is stopped at the budget, the next
  is skipped, and the summary says so (with a stand-in interpreter that sleeps);
* bad input (an unknown case, a budget that is not a number) is one line naming it.
"""

import os
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUITE = os.path.join(ROOT, "benchmarks", "gpu_suite.sh")
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))


def _suite(*cases, env=None, timeout=60):
    full = {**os.environ, "SUITE_WHEELS": "0", **(env or {})}
    return subprocess.run(["bash", SUITE, *cases], capture_output=True, text=True, env=full, timeout=timeout)


def test_each_command_parses_and_the_cases_are_the_issues_targets():
    import throughput
    import time_to_accuracy

    r = _suite(env={"SUITE_DRY_RUN": "1", "OUT": "/results"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    parsed = {}
    for line in lines:
        case, _, command = line.partition(": ")
        argv = shlex.split(command)
        assert argv[0] == "python3"
        parser = {
            "benchmarks/throughput.py": throughput.build_parser(),
            "benchmarks/time_to_accuracy.py": time_to_accuracy.build_parser(),
        }[argv[1]]
        parsed[case] = (argv[1], parser.parse_args(argv[2:]))
        assert parsed[case][1].json == f"/results/{case}.json"
    assert list(parsed) == [
        "cifar_b128",
        "googlenet_b256",
        "inception_v3_b128",
        "tta_cold",
        "cifar_b1024",
        "tta_warm",
    ]
    throughput_cases = {
        (a.model, a.batch_size, a.frameworks)
        for script, a in parsed.values()
        if script.endswith("throughput.py")
    }
    both = "inception_jax,torch,torch-compile"  # beside PyTorch eager and torch.compile
    assert throughput_cases == {
        ("inception_cifar", 128, both),
        ("googlenet", 256, both),
        ("inception_v3", 128, both),
        ("inception_cifar", 1024, both),
    }
    for case in ("tta_cold", "tta_warm"):
        a = parsed[case][1]
        assert (os.path.basename(a.config), a.target) == ("cifar10_fast.py", 0.94)
        assert a.warm_cache  # the warm run reuses the cold run's cache
    assert parsed["tta_cold"][1].warm_cache == parsed["tta_warm"][1].warm_cache


def test_extra_arguments_reach_the_commands():
    r = _suite(
        "cifar_b128",
        "tta_cold",
        env={
            "SUITE_DRY_RUN": "1",
            "SUITE_EXTRA_THROUGHPUT": "--steps 1 --warmup 0",
            "SUITE_EXTRA_TTA": "--set num_epochs=1",
        },
    )
    cifar, tta = r.stdout.strip().splitlines()
    assert "--steps 1 --warmup 0" in cifar and "--set" not in cifar
    assert "--set num_epochs=1" in tta and "--steps" not in tta


@pytest.fixture
def sleeper(tmp_path):
    """A stand-in interpreter: sleeps $FAKE_SLEEP seconds, then writes [] to --json."""
    path = tmp_path / "fake_python"
    path.write_text(
        "#!/usr/bin/env bash\n"
        'while [ $# -gt 0 ]; do [ "$1" = --json ] && json=$2; shift; done\n'
        'sleep "$FAKE_SLEEP"\n'
        'echo "[]" > "$json"\n'
    )
    path.chmod(0o755)
    return str(path)


def test_the_budget_stops_a_case_and_skips_the_rest(tmp_path, sleeper):
    out = tmp_path / "out"
    r = _suite(
        "cifar_b128",
        "googlenet_b256",
        "inception_v3_b128",
        env={
            "SUITE_PYTHON": sleeper,
            "FAKE_SLEEP": "3",
            "SUITE_BUDGET_S": "5",
            "SUITE_MIN_CASE_S": "1",
            "OUT": str(out),
        },
    )
    assert r.returncode == 0, r.stdout + r.stderr
    summary = r.stdout.split("=== summary")[1].strip().splitlines()[1:]
    status = {line.split()[0]: line.split()[1] for line in summary}
    # 3 s of 5: the second case has 2 s left and is stopped; the third finds < 1 s
    assert status == {"cifar_b128": "ok", "googlenet_b256": "timeout", "inception_v3_b128": "skipped"}
    assert (out / "cifar_b128.json").read_text().strip() == "[]"
    assert not (out / "googlenet_b256.json").exists()
    log = (out / "suite.log").read_text()
    assert "=== googlenet_b256: timeout" in log and "inception_v3_b128: skipped" in log


def test_time_to_accuracy_without_data_is_skipped_with_the_reason(tmp_path, sleeper):
    r = _suite(
        "tta_cold",
        "tta_warm",
        env={
            "SUITE_PYTHON": sleeper,
            "FAKE_SLEEP": "0",
            "DATA_DIR": str(tmp_path / "none"),
            "OUT": str(tmp_path),
        },
    )
    assert r.returncode == 0
    assert f"tta_cold: skipped: no CIFAR-10 at {tmp_path / 'none'}" in r.stdout
    assert "put a prepared tfds cifar10 there or set DATA_DIR" in r.stdout


@pytest.mark.parametrize(
    "args, env, expected",
    [
        (["cifar_b256"], {}, "unknown case 'cifar_b256'; expected some of: cifar_b128"),
        ([], {"SUITE_BUDGET_S": "9m"}, "must be whole seconds, got '9m'"),
    ],
)
def test_bad_input_is_one_line(args, env, expected):
    r = _suite(*args, env={"SUITE_DRY_RUN": "1", **env})
    assert r.returncode == 2
    assert expected in r.stderr and len(r.stderr.strip().splitlines()) == 1
