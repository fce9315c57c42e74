"""Figures are checked through their data (trace types and values), never rendered."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from axislens import plots
from axislens.analysis import RoleVectors, role_projections
from axislens.analysis.space import compare_loadings, layer_profile, persona_pca
from axislens.analysis.traits import TraitCosines


@pytest.fixture(scope="module")
def roles() -> RoleVectors:
    g = torch.Generator().manual_seed(0)
    n, d = 20, 8
    along = torch.linspace(-3, 1, n, dtype=torch.float64)
    u = torch.zeros(2, d, dtype=torch.float64)
    u[:, 0] = 1
    x = along[:, None, None] * u + 0.3 * torch.randn(n, 2, d, generator=g, dtype=torch.float64)
    return RoleVectors(
        names=tuple(f"role{i:02d}" for i in range(n)),
        vectors=x,
        counts=(5,) * n,
        layers=(3, 4),
        default=4 * u,
        default_count=7,
        descriptions=tuple(f"description of role {i}" for i in range(n)),
        n_model_layers=6,
    )


def test_variance_bars(roles):
    pca = persona_pca(roles, 3)
    fig = plots.variance_bars(pca, max_components=None)
    assert isinstance(fig, go.Figure)
    bar, line = fig.data
    assert bar.type == "bar" and line.type == "scatter"
    ratio = pca.explained_variance_ratio.numpy()
    np.testing.assert_allclose(bar.y, 100 * ratio, rtol=1e-12)
    np.testing.assert_allclose(line.y, 100 * np.cumsum(ratio), rtol=1e-12)
    assert list(bar.x) == list(range(1, len(ratio) + 1))
    notes = [a.text for a in fig.layout.annotations]
    assert f"70%: {pca.dims[70]} dims" in notes
    assert len(plots.variance_bars(pca, max_components=3).data[0].y) == 3


@pytest.mark.parametrize("dims", [2, 3])
def test_persona_space_scatter(roles, dims):
    pca = persona_pca(roles, 4)
    fig = plots.persona_space_scatter(pca, dims=dims, label_extremes=2)
    pts, default = fig.data
    assert pts.type == ("scatter" if dims == 2 else "scatter3d")
    np.testing.assert_allclose(pts.x, pca.loadings[:, 0].numpy())
    np.testing.assert_allclose(pts.y, pca.loadings[:, 1].numpy())
    if dims == 3:
        np.testing.assert_allclose(pts.z, pca.loadings[:, 2].numpy())
    np.testing.assert_allclose(pts.marker.color, pca.axis_projections.numpy())
    proj = pca.axis_projections.numpy()
    labelled = {t for t in pts.text if t}
    expect = {pca.names[i] for i in [*np.argsort(proj)[:2], *np.argsort(proj)[-2:]]}
    assert labelled == expect
    assert "description of role 7" in pts.hovertext[7]
    np.testing.assert_allclose([default.x[0], default.y[0]], pca.default_position[:2].numpy())
    assert default.name == "default" and default.x[0] > 0  # PC1 sign: default at the positive end
    with pytest.raises(ValueError, match="dims must be 2 or 3"):
        plots.persona_space_scatter(pca, dims=4)  # type: ignore[arg-type]


def test_axis_layer_lines(roles):
    prof = layer_profile(roles)
    fig = plots.axis_layer_lines(prof)
    cos, norm = fig.data
    assert list(cos.x) == [3, 4] and list(norm.x) == [3, 4]
    np.testing.assert_allclose(cos.y, prof.cos_axis_pc1.numpy())
    np.testing.assert_allclose(norm.y, np.linalg.norm(roles.axis_rows().numpy(), axis=-1))
    assert norm.yaxis == "y2"


def test_role_projection_strip(roles):
    proj = role_projections(roles, 3)
    fig = plots.role_projection_strip(proj, label_extremes=1)
    (trace,) = fig.data
    np.testing.assert_allclose(trace.x, np.sort(proj.values.numpy()))
    assert [t for t in trace.text if t] == [
        proj.names[int(np.argmin(proj.values))],
        proj.names[int(np.argmax(proj.values))],
    ]
    assert fig.layout.shapes[0].x0 == pytest.approx(proj.default)


def test_trait_cosine_bars():
    tc = TraitCosines(
        5, ("a", "b", "c", "d", "e"), torch.tensor([0.5, -0.9, 0.1, 0.8, -0.2], dtype=torch.float64)
    )
    fig = plots.trait_cosine_bars(tc, top=None)
    (bar,) = fig.data
    assert bar.type == "bar" and bar.orientation == "h"
    assert list(bar.y) == ["b", "e", "c", "a", "d"]
    np.testing.assert_allclose(bar.x, [-0.9, -0.2, 0.1, 0.5, 0.8])
    assert list(plots.trait_cosine_bars(tc, top=1).data[0].y) == ["b", "d"]


def test_cross_model_scatter(roles):
    other = RoleVectors(
        roles.names[::-1],
        roles.vectors.flip(0) * 2 + 1,
        roles.counts,
        roles.layers,
        default=roles.default * 2 + 1,
    )
    cmp = compare_loadings(persona_pca(roles, 3), persona_pca(other, 3))
    fig = plots.cross_model_scatter(cmp)
    pts, fit = fig.data
    np.testing.assert_allclose(pts.x, cmp.a.numpy())
    np.testing.assert_allclose(pts.y, cmp.b.numpy())
    assert list(pts.text) == list(cmp.names)
    slope, intercept = np.polyfit(cmp.a.numpy(), cmp.b.numpy(), 1)
    np.testing.assert_allclose(fit.y, slope * np.asarray(fit.x) + intercept, rtol=1e-9, atol=1e-9)
    assert f"r = {cmp.r:.3f}" in fig.layout.title.text and cmp.r == pytest.approx(1.0)
