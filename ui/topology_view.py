"""The cluster graph with a plan's communication groups and link load, drawn with Altair.

Uses the cost model's own graph (`costmodel.network.topology`) and rank layout (`costmodel.network.placement`): rank
r runs on GPU r, each axis's groups talk at once (rings for tp/cp/dp, stage i -> i+1 for pp), and a
link's load is the number of concurrent flows that cross it, as `placement.price_flows` counts them
(each flow gets 1/load of the link: max-min fair sharing)."""

from __future__ import annotations

from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from costmodel import ParallelPlan

__all__ = ["link_load", "topology_frames", "topology_chart", "color_legend", "legend_px"]


def _flows(groups: np.ndarray, axis: str) -> list[tuple[int, int]]:
    if groups.shape[1] < 2:
        return []
    if axis == "pp":
        return list(zip(groups[:, :-1].ravel().tolist(), groups[:, 1:].ravel().tolist(), strict=True))
    nxt = np.roll(groups, -1, axis=1)
    return list(zip(groups.ravel().tolist(), nxt.ravel().tolist(), strict=True))


def link_load(topo: Any, plan: ParallelPlan, axis: str) -> dict[tuple[str, str], int]:
    """Concurrent flows of `axis` per undirected link (the busier direction)."""
    from costmodel.network.placement import axis_groups

    directed: dict[tuple[str, str], int] = {}
    for a, b in _flows(axis_groups(plan, axis), axis):
        for e in topo.route(a, b):
            directed[e] = directed.get(e, 0) + 1
    out: dict[tuple[str, str], int] = {}
    for (u, v), n in directed.items():
        key = (u, v) if u <= v else (v, u)
        out[key] = max(out.get(key, 0), n)
    return out


def _positions(topo: Any, servers: list[str]) -> dict[str, tuple[float, float]]:
    """Servers side by side (GPUs in a column, the node switch and NICs beside them); network
    switches in a row above."""
    g = topo.graph
    pos: dict[str, tuple[float, float]] = {}
    width = 4.0
    for s_i, server in enumerate(servers):
        members = [n for n, d in g.nodes(data=True) if d.get("server") == server]
        gpus = sorted((n for n in members if g.nodes[n]["kind"] == "gpu"), key=lambda n: g.nodes[n]["index"])
        nics = sorted(n for n in members if g.nodes[n]["kind"] == "nic")
        switches = sorted(n for n in members if g.nodes[n]["kind"] == "switch")
        x0 = s_i * width
        for j, n in enumerate(gpus):
            pos[n] = (x0, float(j))
        span = max(len(gpus) - 1, 1)
        for j, n in enumerate(switches):
            pos[n] = (x0 + 1.2, span * (j + 1) / (len(switches) + 1))
        for j, n in enumerate(nics):
            pos[n] = (x0 + 2.4, span * (j + 0.5) / max(len(nics), 1))
    net = sorted(n for n, d in g.nodes(data=True) if d.get("server") is None)
    top = max((p[1] for p in pos.values()), default=0.0)
    spread = max(len(servers) * width - 1.6, 1.0)
    tiers = {n: (1 if n.startswith("spine") else 0) for n in net}
    for tier in (0, 1):
        row = [n for n in net if tiers[n] == tier]
        for j, n in enumerate(row):
            pos[n] = (spread * (j + 0.5) / len(row), top + 2.5 + 2.0 * tier)
    return pos


_ROLES = {"idle": "idle GPU", "switch": "server switch (NVSwitch/PCIe)", "nic": "NIC (server to network)",
          "network": "network switch (leaf/spine)"}
_ROLE_COLORS = {"idle GPU": "#d0d0d0", "server switch (NVSwitch/PCIe)": "#6f6f6f",
                "NIC (server to network)": "#a0522d", "network switch (leaf/spine)": "#2f2f2f"}


def _role(d: dict[str, Any]) -> str:
    if d["kind"] == "gpu":
        return _ROLES["idle"]
    if d.get("server") is None:
        return _ROLES["network"]
    return _ROLES["nic"] if d["kind"] == "nic" else _ROLES["switch"]


def color_legend(nodes: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Legend entries and colours: one per group drawn (in group order), then one per kind of other
    node drawn (idle GPUs, server switches, NICs, network switches)."""

    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
               "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2"]
    drawn = list(dict.fromkeys(nodes["group"]))
    groups = sorted((gr for gr in drawn if gr not in _ROLE_COLORS), key=lambda gr: int(gr.rsplit(" ", 1)[1]))
    roles = [r for r in _ROLE_COLORS if r in drawn]
    colors = [palette[i % len(palette)] for i in range(len(groups))] + [_ROLE_COLORS[r] for r in roles]
    return groups + roles, colors


def topology_frames(topo: Any, plan: ParallelPlan, axis: str, *, max_servers: int = 4
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Nodes (x, y, kind, rank, group of `axis`) and edges (x, y, x2, y2, load, bandwidth) of the
    servers that hold `axis` group 0's ranks (at most `max_servers`) and the network above them."""
    from costmodel.network.placement import axis_groups

    g = topo.graph
    groups = axis_groups(plan, axis)
    group_of = {int(r): i for i, row in enumerate(groups) for r in row}
    used = sorted({topo.server_of(int(r)) for r in groups[0]}, key=topo.servers.index)
    servers = (used or [topo.servers[0]])[:max_servers]
    pos = _positions(topo, servers)
    nodes = []
    for n, (x, y) in pos.items():
        d = g.nodes[n]
        rank = d["index"] if d["kind"] == "gpu" and d["index"] < plan.world_size else None
        nodes.append({"id": n, "x": x, "y": y, "kind": d["kind"], "rank": rank,
                      "group": f"{axis} group {group_of[rank]}" if rank is not None else _role(d)})
    load = link_load(topo, plan, axis)
    edges = []
    for u, v, d in g.edges(data=True):
        if u not in pos or v not in pos:
            continue
        key = (u, v) if u <= v else (v, u)
        n = load.get(key, 0)
        edges.append({"a": u, "b": v, "x": pos[u][0], "y": pos[u][1], "x2": pos[v][0], "y2": pos[v][1],
                      "link": d["kind"], "flows": n, "bw_gb_per_s": d["bw_bytes_per_s"] / 1e9,
                      "per_flow_gb_per_s": d["bw_bytes_per_s"] / 1e9 / n if n else d["bw_bytes_per_s"] / 1e9})
    return pd.DataFrame(nodes), pd.DataFrame(edges)


def topology_chart(nodes: pd.DataFrame, edges: pd.DataFrame, *, title: str) -> alt.LayerChart:
    """Edges coloured by concurrent flows (grey = idle), GPUs coloured by their group."""
    hidden = alt.Axis(labels=False, ticks=False, grid=False, domain=False, title=None)
    links = alt.Chart(edges).mark_rule().encode(
        x=alt.X("x:Q", axis=hidden), y=alt.Y("y:Q", axis=hidden, scale=alt.Scale(reverse=True)),
        x2="x2:Q", y2="y2:Q",
        color=alt.Color("flows:Q", scale=alt.Scale(scheme="orangered", domainMin=0), title="flows on link"),
        strokeWidth=alt.condition("datum.flows > 0", alt.value(3), alt.value(1)),
        tooltip=["a", "b", "link", "flows", alt.Tooltip("bw_gb_per_s:Q", format=".1f", title="GB/s"),
                 alt.Tooltip("per_flow_gb_per_s:Q", format=".2f", title="GB/s per flow")],
    )
    shapes = alt.Scale(domain=["gpu", "switch", "nic"], range=["circle", "square", "diamond"])
    domain, colors = color_legend(nodes)
    points = alt.Chart(nodes).mark_point(filled=True, size=160, opacity=1).encode(
        x="x:Q", y=alt.Y("y:Q", scale=alt.Scale(reverse=True)),
        shape=alt.Shape("kind:N", scale=shapes, title="node",
                        legend=alt.Legend(orient="bottom", direction="horizontal",
                                          labelExpr="{'gpu': 'GPU', 'switch': 'switch', 'nic': 'NIC'}[datum.label]")),
        color=alt.Color("group:N", title="colour", scale=alt.Scale(domain=domain, range=colors),
                        legend=alt.Legend(orient="bottom", columns=LEGEND_COLUMNS, symbolLimit=len(domain),
                                          labelLimit=260)),
        tooltip=["id", "kind", "rank", "group"],
    )
    chart = alt.layer(links, points).resolve_scale(color="independent").properties(height=360, title=title)
    return chart


LEGEND_COLUMNS = 3


def legend_px(nodes: pd.DataFrame) -> int:
    """Room under the topology chart for its legends (node kinds, then the colours in rows of 3), so
    no entry is cut off."""
    entries = len(color_legend(nodes)[0])
    return 70 + 22 * -(-entries // LEGEND_COLUMNS)
