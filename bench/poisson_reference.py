"""An independent reference for Poisson image editing: a SciPy sparse direct solve.

Pérez et al. 2003, Eq. 7, assembled pixel pair by pixel pair in float64 with NumPy and
solved with ``scipy.sparse.linalg.spsolve``: nothing is shared with ``jaxblend.poisson``
(no stencils, no multigrid), so the tests and ``bench/poisson.py`` use it as the exact
discrete solution.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spl


def reference_solve(target, source, mask, mode, screen=0.0):
    """Direct sparse solve of Pérez et al. Eq. 7, float64, built from the pixel pairs.

    For p in the mask: |N_p| f_p - sum_{q in N_p, in mask} f_q
    = sum_{q in N_p, outside mask} f*_q + sum_{q in N_p} v_pq, N_p = in-canvas 4-neighbours.
    ``screen`` = lam > 0: the screened equation, lam * f_p added on the left and lam * g_p
    on the right (the minimiser of the gradient error plus lam * ||f - g||^2 on the mask).
    """
    f = np.asarray(target, np.float64)
    g = np.asarray(source, np.float64)
    inside = np.asarray(mask) > 0
    h, w = inside.shape
    index = np.full((h, w), -1)
    index[inside] = np.arange(inside.sum())
    n = int(inside.sum())
    diag = np.zeros(n)
    rhs = np.zeros((n, 3))
    rows, cols = [], []
    pi, pj = np.nonzero(inside)
    for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        qi, qj = pi + di, pj + dj
        ok = (qi >= 0) & (qi < h) & (qj >= 0) & (qj < w)
        p, a, b = index[pi[ok], pj[ok]], qi[ok], qj[ok]
        diag[p] += 1
        v = g[pi[ok], pj[ok]] - g[a, b]
        if mode == "mixed":
            vt = f[pi[ok], pj[ok]] - f[a, b]
            v = np.where(np.abs(vt) > np.abs(v), vt, v)
        np.add.at(rhs, p, v)
        q_in = inside[a, b]
        np.add.at(rhs, p[~q_in], f[a[~q_in], b[~q_in]])
        rows.append(p[q_in])
        cols.append(index[a[q_in], b[q_in]])
    diag += screen
    rhs += screen * g[pi, pj]
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    mat = sp.csc_matrix(
        (
            np.concatenate([diag, -np.ones(len(rows))]),
            (np.r_[np.arange(n), rows], np.r_[np.arange(n), cols]),
        ),
        shape=(n, n),
    )
    out = f.copy()
    out[inside] = spl.spsolve(mat, rhs)
    return out
