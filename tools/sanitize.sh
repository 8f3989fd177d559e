#!/usr/bin/env bash
# tools/sanitize.sh — run the test suite against an AddressSanitizer +
# UndefinedBehaviorSanitizer build of cbp's C extensions.
#
# Usage (from anywhere inside the repository; needs gcc, git, Cython,
# NumPy, SciPy and pytest — what `pip install -e ".[test]"` needs):
#
#     tools/sanitize.sh                       # the whole suite (pytest's testpaths)
#     tools/sanitize.sh tests/test_leaks.py   # any pytest arguments are passed on
#     tools/sanitize.sh -k train_step -x
#     tools/sanitize.sh --selftest            # prove that reports are caught
#
# What it does:
#   1. copies the working tree — tracked files plus untracked files that are
#      not git-ignored, so uncommitted edits are included and no build
#      artefact (*.so, generated cbp/_*.c, build/) is — into a fresh
#      temporary directory; the repository itself is never written to and
#      nothing is pip-installed;
#   2. builds the extensions there in place with CBP_SANITIZE=1
#      (setup.py: -O1 -g -fsanitize=address,undefined
#      -fno-sanitize-recover=undefined -fno-omit-frame-pointer);
#   3. checks that the built .so files are instrumented (nm -D shows
#      __asan_init and __ubsan_handle_*, ldd shows libasan) and that Python
#      imports cbp, cbp._engine and cbp._ops from the copy, not from an
#      installed or editable cbp, with libasan mapped in the interpreter;
#   4. runs pytest there with the sanitizer runtimes preloaded into Python
#      (LD_PRELOAD="libasan.so libubsan.so"), PYTHONMALLOC=malloc (so ASan
#      also sees Python's small allocations, which pymalloc would hide), and
#      every sanitizer report of the test process and of any subprocess it
#      starts written to <tmp>/sanitizer-logs/ — so a report cannot be
#      swallowed by pytest's output capture or by a test that expects a
#      subprocess to fail;
#   5. prints every report and exits non-zero if there is any.
#
# Exit status: 0 clean and all tests passed; 99 at least one sanitizer
# report (whatever pytest said); otherwise pytest's own exit status (1 test
# failures, 5 no tests collected, ...); 2 for a setup or build error.
#
# Sanitizer settings, and why:
#   ASAN_OPTIONS  detect_leaks=0 by default: CPython (under PYTHONMALLOC=
#                 malloc), NumPy, SciPy and OpenBLAS keep allocations alive
#                 until exit on purpose, so LeakSanitizer at exit reports
#                 "leaks" in every run that are not cbp's.  Leaks of cbp are
#                 covered by tests/test_leaks.py (RSS and tracemalloc stay
#                 flat over many steps and create/destroy cycles).  Set
#                 CBP_SANITIZE_LEAKS=1 to run LeakSanitizer anyway, with full
#                 (slow) malloc stacks: the run then fails only on leak
#                 records whose allocation stack goes through cbp's own code
#                 (cbp/_engine, cbp/_ops, src_c/) and not through
#                 tracemalloc's bookkeeping; the others are counted and
#                 ignored.  Full stacks make this mode several times slower.
#                 allocator_may_return_null=1: a test asking for an absurd
#                 array gets NumPy's MemoryError, as without ASan, instead of
#                 an ASan abort.  detect_stack_use_after_return=1,
#                 strict_string_checks=1, halt_on_error=1, exitcode=99.
#   UBSAN_OPTIONS print_stacktrace=1:halt_on_error=1 (the build also uses
#                 -fno-sanitize-recover, so any UB report aborts).  Next to
#                 ASan, UBSan ignores log_path and writes to stderr, so a
#                 sitecustomize.py put on PYTHONPATH sets libubsan's report
#                 path in every Python process of the run.
#   Hypothesis    a pytest plugin of this script loads a profile without
#                 deadlines (code runs several times slower under ASan).
#   Benchmarks    --benchmark-disable when pytest-benchmark is installed.
#   Leak tests    CBP_LEAK_STEPS=2000 CBP_LEAK_FITS=20 CBP_LEAK_CYCLES=100
#                 unless set (tests/test_leaks.py checks only tracemalloc
#                 under ASan).
# OPENBLAS_* variables (e.g. OPENBLAS_CORETYPE) are passed through as set.
#
# Limits: code inside SciPy's OpenBLAS and NumPy is not instrumented, so a
# BLAS call given wrong dimensions that overruns a buffer is caught only if
# the overrun reaches a redzone through an intercepted call or crashes;
# cbp's own C code (src_c/) and its Cython bindings are fully instrumented.
#
# Options (environment):
#   PYTHON=...              interpreter (default: python3 on PATH; a pyenv
#                           shim is resolved to the real binary)
#   CBP_SANITIZE_KEEP=1     keep the temporary directory (its path is printed)
#   CBP_SANITIZE_LEAKS=1    also run LeakSanitizer (see above)
#   CBP_SANITIZE_JOBS=N     parallel compile jobs (default 2)
set -uo pipefail

die() { echo "sanitize.sh: $*" >&2; exit 2; }

selftest=
if [[ ${1:-} == --selftest ]]; then
    selftest=1
    shift
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(git -C "$here" rev-parse --show-toplevel 2>/dev/null) || die "not inside a git checkout"

# The real interpreter, not a shell-script shim: nothing but Python should
# run with the sanitizer runtimes preloaded.
PYTHON=$("${PYTHON:-python3}" -c 'import sys; print(sys.executable)') ||
    die "cannot run ${PYTHON:-python3}"

asan=$(gcc -print-file-name=libasan.so)
ubsan=$(gcc -print-file-name=libubsan.so)
[[ -e $asan ]] || die "libasan.so not found (gcc -print-file-name=libasan.so gave '$asan'); install gcc's sanitizer runtimes"
[[ -e $ubsan ]] || die "libubsan.so not found (gcc -print-file-name=libubsan.so gave '$ubsan')"
asan=$(readlink -f "$asan")
ubsan=$(readlink -f "$ubsan")

work=$(mktemp -d "${TMPDIR:-/tmp}/cbp-sanitize.XXXXXX") || die "mktemp failed"
cleanup() {
    if [[ -n ${CBP_SANITIZE_KEEP:-} ]]; then
        echo "sanitize.sh: kept $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
tree=$work/tree
logs=$work/sanitizer-logs
hooks=$work/pyhooks
mkdir -p "$tree" "$logs" "$hooks"

# 1. Copy the working tree: tracked files that still exist, plus untracked
#    files that .gitignore does not exclude.
echo "== copying $repo -> $tree"
(
    cd "$repo" &&
    git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do
            [[ -f $f || -L $f ]] && printf '%s\0' "$f"
        done |
        tar --null --files-from=- -cf - |
        tar -xf - -C "$tree"
) || die "copying the working tree failed"
echo "   $(find "$tree" -type f | wc -l) files; HEAD $(git -C "$repo" rev-parse --short HEAD)," \
     "$(git -C "$repo" status --porcelain | wc -l) uncommitted change(s) included"

# 2. Build in place with the sanitizers.
echo "== building with CBP_SANITIZE=1 ($PYTHON setup.py build_ext --inplace)"
(
    cd "$tree" &&
    CBP_SANITIZE=1 "$PYTHON" setup.py build_ext --inplace -j "${CBP_SANITIZE_JOBS:-2}"
) >"$work/build.log" 2>&1 || { tail -n 60 "$work/build.log" >&2; die "build failed (log above)"; }
# Compiler warnings about cbp's own sources (not Cython's generated C).
grep -E "^(src_c|cbp)/[^:]*:[0-9]+:[0-9]+: warning:" "$work/build.log" |
    grep -v -E "^cbp/_[a-z]+\.c:" | sort -u | sed 's/^/   warning: /'

# 3. The extensions are instrumented ...
shopt -s nullglob
sos=("$tree"/cbp/*.so)
shopt -u nullglob
(( ${#sos[@]} > 0 )) || die "no extension module was built"
for so in "${sos[@]}"; do
    syms=$(nm -D "$so") || die "nm -D $so failed"
    grep -q ' __asan_init$' <<<"$syms" || die "$so: no __asan_init, not built with ASan"
    grep -q ' __ubsan_handle_' <<<"$syms" || die "$so: no __ubsan_handle_*, not built with UBSan"
    grep -q libasan <<<"$(ldd "$so")" || die "$so: does not link libasan"
    echo "   instrumented: ${so#"$tree"/} ($(grep -c ' __asan_' <<<"$syms") __asan_* and" \
         "$(grep -c ' __ubsan_handle_' <<<"$syms") __ubsan_handle_* symbols; links libasan)"
done

# Python hooks of the run (on PYTHONPATH, never in the tree):
# sitecustomize.py, imported by every Python process at start-up, sends
# libubsan's reports to the log directory (see the header).
cat >"$hooks/sitecustomize.py" <<'EOF'
"""Installed by tools/sanitize.sh: UBSan reports go to the run's log directory."""
import ctypes
import os

_path = os.environ.get("CBP_SANITIZE_UBSAN_LOG")
if _path:
    ctypes.CDLL("libubsan.so.1").__sanitizer_set_report_path(os.fsencode(_path))
EOF
# A pytest plugin: no hypothesis deadlines under ASan.
cat >"$hooks/cbp_sanitize_plugin.py" <<'EOF'
"""pytest plugin loaded by tools/sanitize.sh: no hypothesis deadlines under ASan."""
try:
    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis is optional
    pass
else:
    settings.register_profile("cbp-sanitize", deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile("cbp-sanitize")
EOF

if [[ -n $selftest ]]; then
    # Two canaries that must be reported: a heap overflow (memmove past an
    # 8-byte malloc) in a subprocess whose failure the test expects, and a
    # signed overflow in a tiny UBSan-instrumented library in the test
    # process itself.  Used to check this script, not cbp.
    mkdir -p "$work/selftest"
    cat >"$work/selftest/test_sanitizer_canaries.py" <<'EOF'
import ctypes
import subprocess
import sys


def test_asan_report_in_a_subprocess_is_not_lost():
    code = ("import ctypes; libc = ctypes.CDLL(None); libc.malloc.restype = ctypes.c_void_p; "
            "p = libc.malloc(8); b = ctypes.create_string_buffer(64); ctypes.memmove(b, p, 64)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode != 0


def test_ubsan_report_in_the_test_process(tmp_path):
    (tmp_path / "u.c").write_text("#include <limits.h>\nint f(int x) { return x + INT_MAX; }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-fsanitize=undefined",
                    "-fno-sanitize-recover=undefined", str(tmp_path / "u.c"),
                    "-o", str(tmp_path / "u.so")], check=True, env={"PATH": "/usr/bin:/bin"})
    ctypes.CDLL(str(tmp_path / "u.so")).f(5)
EOF
    set -- "$work/selftest/test_sanitizer_canaries.py" "$@"
fi

# 4. Run pytest on the copy with the runtimes preloaded.
asan_opts=(detect_leaks=0 allocator_may_return_null=1 strict_string_checks=1
           detect_stack_use_after_return=1 halt_on_error=1 exitcode=99
           "log_path=$logs/asan")
if [[ -n ${CBP_SANITIZE_LEAKS:-} ]]; then
    asan_opts[0]=detect_leaks=1
    asan_opts+=(fast_unwind_on_malloc=0 malloc_context_size=40)
    export LSAN_OPTIONS="exitcode=0:log_path=$logs/lsan"
fi
export ASAN_OPTIONS=$(IFS=:; echo "${asan_opts[*]}")
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=99:log_path=$logs/ubsan"
export CBP_SANITIZE_UBSAN_LOG=$logs/ubsan
export PYTHONMALLOC=malloc
export PYTHONPATH="$tree:$hooks${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
# tests/test_leaks.py: shorter runs under ASan (its RSS checks skip there,
# since ASan's quarantine keeps freed memory resident; tracemalloc still
# checks).  Set these variables to override.
export CBP_LEAK_STEPS=${CBP_LEAK_STEPS:-2000} CBP_LEAK_FITS=${CBP_LEAK_FITS:-20}
export CBP_LEAK_CYCLES=${CBP_LEAK_CYCLES:-100}
plugin_args=(-p cbp_sanitize_plugin -p no:cacheprovider)
if "$PYTHON" -c "import pytest_benchmark" 2>/dev/null; then
    plugin_args+=(--benchmark-disable)   # benchmarks run once, untimed
fi
export LD_PRELOAD="$asan $ubsan${LD_PRELOAD:+ $LD_PRELOAD}"
cd "$tree" || die "cd $tree"

echo "== checking that Python imports the sanitized build"
"$PYTHON" - "$tree" <<'EOF' || { unset LD_PRELOAD; die "the sanitized cbp is not the one imported (see above)"; }
import os, sys
import cbp, cbp._engine, cbp._ops
tree = os.path.realpath(sys.argv[1])
for mod in (cbp, cbp._engine, cbp._ops):
    print("   " + mod.__name__ + ": " + mod.__file__)
    if not os.path.realpath(mod.__file__).startswith(tree + os.sep):
        sys.exit(f"{mod.__name__} comes from {mod.__file__}, not from {tree}")
if "libasan" not in open("/proc/self/maps").read():
    sys.exit("libasan is not mapped into the interpreter")
print("   libasan is mapped into the interpreter")
EOF

echo "== ASAN_OPTIONS=$ASAN_OPTIONS"
echo "== UBSAN_OPTIONS=$UBSAN_OPTIONS"
echo "== LD_PRELOAD=$LD_PRELOAD PYTHONMALLOC=$PYTHONMALLOC"
echo "== $PYTHON -m pytest ${plugin_args[*]} $*"
"$PYTHON" -m pytest "${plugin_args[@]}" "$@"
rc=$?
unset LD_PRELOAD

# 5. Any report, from the test process or a subprocess, fails the run.
#    LeakSanitizer reports (CBP_SANITIZE_LEAKS=1 only) count only for leak
#    records whose allocation stack passes through cbp's code.
"$PYTHON" - "$logs" "$rc" "$selftest" <<'EOF'
import os
import re
import sys

logs, rc, selftest = sys.argv[1], int(sys.argv[2]), bool(sys.argv[3])
OURS = re.compile(r"(cbp/_(engine|ops)[.\w-]*\.(c|pyx|so)|src_c/\w+\.[ch])\b")
bad, ignored_leaks = [], 0
for name in sorted(os.listdir(logs)):
    text = open(os.path.join(logs, name), errors="replace").read()
    if name.startswith("lsan.") and "ERROR: LeakSanitizer" in text and \
            "ERROR: AddressSanitizer" not in text:
        records = re.split(r"\n(?=(?:Direct|Indirect) leak of )", text)
        # Ours: a cbp frame in the allocation stack, and not tracemalloc's
        # own bookkeeping (tests/test_leaks.py starts and stops it).
        ours = [r for r in records[1:] if OURS.search(r) and "_tracemalloc.c" not in r]
        ignored_leaks += len(records) - 1 - len(ours)
        if ours:
            bad.append((name, "\n".join(ours)))
    elif text.strip():
        bad.append((name, text))
for name, text in bad:
    print(f"===================== sanitizer report: {name} =====================", file=sys.stderr)
    print(text, file=sys.stderr)
if ignored_leaks:
    print(f"sanitize.sh: ignored {ignored_leaks} leak record(s) of the interpreter and "
          "libraries (no cbp frame in the stack)")
if selftest:
    kinds = {name.split(".")[0] for name, _ in bad}
    ok = {"asan", "ubsan"} <= kinds
    print(f"sanitize.sh: selftest {'passed' if ok else 'FAILED'}: reports caught from "
          f"{sorted(kinds) or 'nothing'} (expected asan and ubsan)")
    sys.exit(0 if ok else 99)
if bad:
    print(f"sanitize.sh: {len(bad)} sanitizer report(s) (pytest exit status {rc})", file=sys.stderr)
    sys.exit(99)
if rc == 99:
    print("sanitize.sh: pytest exited with the sanitizer exit code 99 but left no report",
          file=sys.stderr)
    sys.exit(99)
print(f"sanitize.sh: no sanitizer report; pytest exit status {rc}")
sys.exit(rc)
EOF
