"""Mutation checks: each claim's test must fail when the claim is broken on purpose.

    python tests/mutations.py            # every mutation (make test runs this)
    python tests/mutations.py recorder   # those whose name contains "recorder"
    MUTATION_JOBS=1 python tests/mutations.py   # one at a time (default: the CPUs, at most 4)

First a control run: every named test must pass on an unmodified copy (else a test failing
for another reason, such as missing data, would count as catching its mutation). Then for each
mutation the package and the tests are copied into a temporary folder, the named source text is
replaced there (it must occur exactly once), and only the named tests run on that copy; the
check passes when they fail in their bodies (an error in a fixture does not count). The table
is tests/CLAIMS.md's. Exit code: the number of mutations whose tests still passed (0: every
test caught its mutation).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str  # relative to the repository root
    edits: tuple[tuple[str, str], ...]  # (old, new): each old occurs exactly once
    tests: tuple[str, ...]  # pytest node ids that must fail


MUTATIONS = (
    Mutation("recorder: no defensive copy of recorded weights", "attnviz/record/collect.py",
             (("value = value.clone() if value.dtype == torch.float32 else value.float()",
               "value = value if value.dtype == torch.float32 else value.float()"),),
             ("tests/test_claims.py::test_records_are_copies_the_network_cannot_overwrite",)),
    Mutation("recorder: no copy of a named adapter's output", "attnviz/record/collect.py",
             (("value = (out.detach() if out.requires_grad else out).clone()",
               "value = out.detach() if out.requires_grad else out"),),
             ("tests/test_claims.py::"
              "test_adapter_records_are_copies_the_network_cannot_overwrite",)),
    Mutation("recorder: its hooks left on the model after the block",
             "attnviz/record/handles.py",
             (("            hooks.pop(self.id, None)", "            pass"),),
             ("tests/test_recorder.py::test_recording_leaves_the_users_hooks_as_it_found_them",)),
    Mutation("recorder: a subclass trusted on its parent's word (attnviz_plain inherited)",
             "attnviz/record/sites.py",
             (('    return cls.__dict__.get("attnviz_plain") is True',
               '    return getattr(cls, "attnviz_plain", False) is True'),),
             ("tests/test_record_passes.py::"
              "test_a_subclass_that_adds_a_gate_is_watched_from_the_first_recording",)),
    Mutation("recorder: misses listed only when nothing was recorded",
             "attnviz/record/sites.py",
             (("    names = list(recorded)\n    out = []",
               "    names = list(recorded)\n    if names:\n        return []\n    out = []"),),
             ("tests/test_claims.py::test_a_partial_miss_is_listed",)),
    Mutation("publisher: report written straight into OUT (no staging)",
             "attnviz/publish.py",
             (('        real = Path(os.path.realpath(self.out))\n        with contextlib.suppress'
               '(OSError):\n            if os.stat',
               '        return self.out\n        real = Path(os.path.realpath(self.out))\n'
               '        with contextlib.suppress(OSError):\n            if os.stat'),
              ("            if self.stage.name and self._fixed is None:",
               "            if self.stage.name and self._fixed is None"
               " and self.stage != self.out:")),
             ("tests/test_claims.py::test_a_kill_with_everything_staged_leaves_the_old_report",)),
    Mutation("publisher: each output linked straight to its run (no one-rename switch)",
             "attnviz/publish.py",
             (("                _link(self.out / name, link_text(self.kind, name))\n",
               "                _link(self.out / name, os.path.relpath(run / name, self.out))\n"),),
             ("tests/test_claims.py::test_sigkill_between_the_renames_leaves_old_or_new",)),
    Mutation("publisher: signals not held during the renames", "attnviz/publish.py",
             (("    if threading.current_thread() is not threading.main_thread():\n        yield",
               "    if True:\n        yield"),),
             ("tests/test_claims.py::"
              "test_sigterm_between_the_renames_is_held_until_the_report_is_whole",)),
    Mutation("stats merge: Chan's merge without the between-batch term",
             "attnviz/stats/moments.py",
             (("self.m2 += m2_b + delta * delta * self.col(self.n * n_b / safe)",
               "self.m2 += m2_b"),),
             ("tests/test_stats.py::test_moments_match_numpy_per_group_whatever_the_batches",)),
    Mutation("stats merge: processes merged without their spread around the mean",
             "attnviz/stats/distributed.py",
             (("m2 = [m.m2 + m.col(m.n) * (m.mean - mean) ** 2", "m2 = [m.m2 + 0 * m.n.sum()"),),
             ("tests/test_claims.py::"
              "test_moments_of_two_processes_merge_into_those_of_all_the_data",)),
    Mutation("names: bytes that are not UTF-8 kept raw", "attnviz/terminal.py",
             (('    if s.isascii():\n        return s\n',
               '    if True:\n        return s\n'),),
             ("tests/test_names.py::test_report_writes_every_output_with_escaped_names",)),
    Mutation("limits: no upper bound on the input size", "attnviz/checks.py",
             (("MAX_INPUT_SIZE = 1024", "MAX_INPUT_SIZE = 10**9"),),
             ("tests/test_limits.py::test_library_limits_state_the_estimate",)),
    Mutation("limits: brace patterns expanded without counting", "attnviz/engine/sources.py",
             (("if brace_count(text) <= limit else []", "if True else []"),),
             ("tests/test_limits.py::test_hostile_sizes_are_refused_in_bounded_memory"
              "[stats x-{00000000..99999999}.tar --out o-more than 100000 names]",)),
    Mutation("archives: zip checkpoint inflated unchecked", "attnviz/models/checkpoints.py",
             (("        check_archive_size(p)\n", ""),),
             ("tests/test_limits.py::test_checkpoint_zip_bomb_is_refused_before_inflating",)),
    Mutation("archives: tar member read whatever its size", "attnviz/engine/shards.py",
             (("                if info.size > limit:", "                if False:"),
              ("member.read(limit + 1)", "member.read()")),
             ("tests/test_limits.py::test_tar_member_over_the_limit_is_listed_unread",)),
    Mutation("notebooks: written through a planted symlink", "attnviz/resources/__init__.py",
             (("os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, \"O_NOFOLLOW\", 0)",
               "os.O_WRONLY | os.O_CREAT | os.O_TRUNC"),
              ("os.path.lexists(folder / p.name)", "(folder / p.name).exists()")),
             ("tests/test_notebook_links.py::test_links_are_refused_without_force",)),
    Mutation("resume: data not fingerprinted", "attnviz/engine/sources.py",
             (("        return h.hexdigest()", "        return ''"),),
             ("tests/test_resume.py::test_changed_data_is_refused[touch]",)),
    Mutation("resume: loaded partials not validated", "attnviz/stats/checkpoint.py",
             (("        aggregate.check(progress.n_seen - progress.n_bad)\n", ""),),
             ("tests/test_resume.py::test_edited_resume_files_are_refused[NaN mean]",)),
    Mutation("labels: count not compared with the outputs", "attnviz/models/preprocess.py",
             (("    if names and len(names) != outputs:", "    if False:"),),
             ("tests/test_small_fixes.py::"
              "test_labels_whose_count_differs_from_the_outputs_are_refused[report-2]",)),
    Mutation("checkpoints: float64 overflow to float32 accepted", "attnviz/models/checkpoints.py",
             (("    if overflow:\n", "    if False:\n"),),
             ("tests/test_small_fixes.py::"
              "test_float64_weight_too_large_for_float32_is_refused[.pt]",)),
    Mutation("images: JPEG data not checked by libjpeg in strict mode", "attnviz/images.py",
             (("        if text.startswith(JPEG_DAMAGE) and", "        if False and"),),
             ("tests/test_jpeg_damage.py::test_random_bytes_in_a_jpeg_are_refused_naming_the_file"
              "[chelsea.jpg-0-0.5]",)),
    Mutation("images: the fast PNG reader takes a PNG with a transparent colour",
             "attnviz/pngread.py",
             (('_CONVERTED = frozenset((b"tRNS", b"eXIf", b"acTL"))',
               '_CONVERTED = frozenset((b"eXIf", b"acTL"))'),),
             ("tests/test_pngread.py::test_pngs_pil_converts_are_left_to_pil",)),
    Mutation("report: an image whose only bad weight is +inf not flagged",
             "attnviz/report/collect.py",
             (("            flagged = [not (isfinite(lo) and isfinite(hi))",
               "            flagged = [not isfinite(lo) and bool(hi)"),),
             ("tests/test_report_kinds.py::"
              "test_images_with_nan_or_infinite_weights_are_named[spatial]",)),
    Mutation("report: class deviation of a class's images against the wrong mean",
             "attnviz/report/classes.py",
             (("                dev = t / m - mean\n",
               "                dev = t / (m + 1) - mean\n"),),
             ("tests/test_report_classes.py::test_class_deviation_is_what_the_network_computed",)),
    Mutation("explorer: attention row of the query with row and column swapped",
             "attnviz/widgets/canvas.py",
             (("kmap = pa.key_map(r.value, query, qg, kg, head)",
               "kmap = pa.key_map(r.value, query[::-1], qg, kg, head)"),),
             ("tests/test_explorer_attention.py::test_it_draws_the_recorded_key_row",)),
    Mutation("explorer: a click picks the cell mirrored top to bottom",
             "attnviz/widgets/canvas.py",
             (("return (min(int((1 - w) * grid[0]), grid[0] - 1),",
               "return (min(int(w * grid[0]), grid[0] - 1),"),),
             ("tests/test_explorer_attention.py::test_a_click_picks_the_cell_under_it",)),
)


def _copy(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in ("attnviz", "tests"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    for name in ("data", "notebooks"):  # read, never written, by the tests: linked, not copied
        (dest / name).symlink_to(ROOT / name, target_is_directory=True)


def _apply(root: Path, m: Mutation) -> None:
    path = root / m.path
    text = path.read_text(encoding="utf-8")
    for old, new in m.edits:
        count = text.count(old)
        if count != 1:
            raise SystemExit(f"mutation {m.name!r}: {old!r} occurs {count} times in {m.path}; "
                             "update tests/mutations.py with the code")
        text = text.replace(old, new)
    path.write_text(text, encoding="utf-8")


def _pytest(root: Path, tests: tuple[str, ...]) -> tuple[int, int, str]:
    """Run ``tests`` on the copy at ``root``: ``(failed, errors, output tail)`` — a test that
    fails inside its body counts as failed; one that errors in a fixture does not."""
    import xml.etree.ElementTree as ET

    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    xml = root / "junit.xml"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-o", "addopts=", f"--junitxml={xml}", *tests], cwd=root,
                          env=env, capture_output=True, text=True, timeout=900)
    tail = "\n".join(proc.stdout.strip().splitlines()[-3:])
    if not xml.exists():
        return 0, 1, tail
    cases = ET.parse(xml).getroot().iter("testcase")
    outcomes = [[c.tag for c in case] for case in cases]
    return (sum("failure" in o for o in outcomes), sum("error" in o for o in outcomes), tail)


def run(m: Mutation | None, tests: tuple[str, ...] = ()) -> tuple[bool, str, float]:
    """``(caught, pytest output tail, seconds)``: caught when the named tests failed (in their
    bodies, not in setup). ``m`` None: the control run of ``tests`` on the unmutated copy,
    "caught" when they all passed."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="attnviz-mutation-") as tmp:
        root = Path(tmp)
        _copy(root)
        if m is not None:
            _apply(root, m)
        failed, errors, tail = _pytest(root, m.tests if m is not None else tests)
    ok = (failed == errors == 0) if m is None else (failed > 0 and errors == 0)
    return ok, tail, time.perf_counter() - t0


def main(argv: list[str]) -> int:
    from concurrent.futures import ThreadPoolExecutor, as_completed

    chosen = [m for m in MUTATIONS if not argv or any(a in m.name for a in argv)]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    jobs = int(os.environ.get("MUTATION_JOBS") or min(4, cpus or 1))
    control = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
    passed, tail, seconds = run(None, control)
    print(f"{'passed' if passed else 'FAILED'}  {seconds:5.1f} s  control: the {len(control)} "
          "named tests on the unmodified code", flush=True)
    if not passed:  # a mutation's test failing for another reason would count as caught
        print("    " + tail.replace("\n", "\n    "), flush=True)
        return len(chosen) + 1
    missed = 0
    with ThreadPoolExecutor(max(1, jobs)) as pool:  # each mutation runs in its own process
        futures = {pool.submit(run, m): m for m in chosen}
        for future in as_completed(futures):
            m = futures[future]
            caught, tail, seconds = future.result()
            print(f"{'caught' if caught else 'MISSED'}  {seconds:5.1f} s  {m.name}", flush=True)
            if not caught:
                missed += 1
                print("    " + tail.replace("\n", "\n    "), flush=True)
    print(f"{len(chosen) - missed}/{len(chosen)} mutations caught by their tests")
    return missed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
