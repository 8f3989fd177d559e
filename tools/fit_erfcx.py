"""Chebyshev coefficients of g(t) = (1 + 2a) e^(a²) erfc(a), a = K (1 + t) / (1 − t),
for src_c/vmath_impl.h (FN(vm_erfcx)): erfcx(a) = g(t) / (1 + 2a) on a >= 0.

The scaling (1 + 2a) makes g bounded and smooth on t in [−1, 1] (g(−1) = 1, g(1) =
2/√π); its Chebyshev coefficients fall below 1e-17 by degree 25 (Shepherd and
Laframboise's form, Math. Comp. 36 (1981), with their K = 3.75).  Computed at 40
digits with mpmath (interpolation at 160 Chebyshev nodes) and printed as C
literals: degree 26 for float64 (the first omitted coefficient is 1e-20), 15 for
float32 (3e-11).  Run:  python tools/fit_erfcx.py
"""
import mpmath as mp

mp.mp.dps = 40
K = mp.mpf("3.75")
N = 160


def g(t):
    if t == 1:
        return 2 / mp.sqrt(mp.pi)
    a = K * (1 + t) / (1 - t)
    return (1 + 2 * a) * mp.erfc(a) * mp.exp(a * a)


def coefficients():
    nodes = [mp.cos(mp.pi * (j + mp.mpf(1) / 2) / N) for j in range(N)]
    values = [g(t) for t in nodes]
    c = [2 * mp.fsum(v * mp.cos(mp.pi * k * (j + mp.mpf(1) / 2) / N)
                     for j, v in enumerate(values)) / N for k in range(N)]
    c[0] /= 2
    return c


if __name__ == "__main__":
    c = coefficients()
    for name, degree in (("float64", 26), ("float32", 15)):
        print(f"/* {name}: c_0 .. c_{degree}; |c_{degree + 1}| = {mp.nstr(abs(c[degree + 1]), 2)} */")
        print(", ".join(mp.nstr(x, 20, min_fixed=1, max_fixed=0) for x in c[:degree + 1]))
