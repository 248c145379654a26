"""Spend charts: stacked bars of daily spend per key or per model, drawn as SVG on the server,
with the same figures as a table (so they read without the picture, and without JavaScript)."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from infrastructure.http.dashboard.money import credits, money, plural

# Okabe–Ito: distinguishable with the common colour-vision deficiencies.
CHART_COLOURS = (
    "#0072b2",
    "#e69f00",
    "#009e73",
    "#cc79a7",
    "#56b4e9",
    "#d55e00",
    "#f0e442",
    "#555555",
)


# --- usage ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    label: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    top: int
    plot_width: int
    plot_height: int
    bars: list[Bar]
    y_ticks: list[tuple[float, str]]
    x_ticks: list[tuple[float, str]]
    legend: list[tuple[str, str, str, str]]  # (name, display, colour, total)
    days: list[tuple[str, list[str], str]]  # (day, cost per legend key, total)
    total: str
    summary: str


def nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above `value` (micro-credits)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def daily_chart(
    spend: Mapping[tuple[str, str], int],
    names: Mapping[str, tuple[str, str]],
    days: Sequence[str],
    per: str = "key",
) -> Chart:
    """Stacked bars of each series' spend per day. `spend`: (series, day) -> micro-credits;
    `names`: series (a key id, a model) -> (name, display); `per` names a series in words."""
    width, height, left, top, bottom, right = 760, 260, 70, 12, 36, 12
    plot_width, plot_height = width - left - right, height - top - bottom
    key_ids = sorted(
        {key for key, _ in spend},
        key=lambda k: (-sum(v for (kk, _), v in spend.items() if kk == k), k),
    )
    colours = {k: CHART_COLOURS[i % len(CHART_COLOURS)] for i, k in enumerate(key_ids)}
    totals = {day: sum(spend.get((k, day), 0) for k in key_ids) for day in days}
    step = nice_ceiling(-(-max([*totals.values(), 1]) // 4))  # four gridlines of a round step
    top_value = 4 * step
    slot = plot_width / len(days)
    bars: list[Bar] = []
    for index, day in enumerate(days):
        base = 0
        for key in key_ids:
            cost = spend.get((key, day), 0)
            if cost <= 0:
                continue
            y0 = plot_height * base / top_value
            h = max(plot_height * cost / top_value, 1.0)
            name = names.get(key, (key[:8], ""))[0]
            bars.append(
                Bar(
                    x=round(left + index * slot + slot * 0.15, 2),
                    y=round(top + plot_height - y0 - h, 2),
                    width=round(slot * 0.7, 2),
                    height=round(h, 2),
                    colour=colours[key],
                    label=f"{day} · {name}: {credits(cost)}",
                )
            )
            base += cost
    y_ticks = [
        (round(top + plot_height - plot_height * i / 4, 2), money(step * i)) for i in range(5)
    ]
    x_ticks = [
        (round(left + i * slot + slot / 2, 2), days[i][5:])
        for i in range(len(days))
        if i % 5 == 0 or i == len(days) - 1
    ]
    legend = [
        (
            names.get(k, (k[:8], ""))[0],
            names.get(k, ("", ""))[1],
            colours[k],
            money(sum(spend.get((k, d), 0) for d in days)),
        )
        for k in key_ids
    ]
    table = [
        (day, [money(spend.get((k, day), 0)) for k in key_ids], money(totals[day]))
        for day in reversed(days)
        if totals[day]
    ]
    total = sum(totals.values())
    summary = f"Daily spend per {per} from {days[0]} to {days[-1]}: {credits(total)} in all" + (
        f", across {plural(len(key_ids), per)}." if key_ids else "."
    )
    return Chart(
        width=width,
        height=height,
        left=left,
        top=top,
        plot_width=plot_width,
        plot_height=plot_height,
        bars=bars,
        y_ticks=y_ticks,
        x_ticks=x_ticks,
        legend=legend,
        days=table,
        total=money(total),
        summary=summary,
    )
