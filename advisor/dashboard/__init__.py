"""The run dashboard: a state model fed by events, two views, a driver.

    events.jsonl --driver.read(offset)--> RunState.update(event)      state.py: O(1) per event, no rich
    RunState --rich_view.render(state, width, now, height)--> one renderable  fits width x height (80x24 first)
    event --plain.format_event_line(event)--> one log line            nohup/CI, no terminal
    format.py: axis, sparkline, curve, bar, fmt, duration, gib (shared by both views; a scale is
               never narrower than 1 % of the value, so a near-constant series draws flat)
    driver.py: Dashboard (rich Live on a terminal, plain lines otherwise), load_state

The dashboard never touches the GPU: memory figures come from the events.
Nothing in a frame reads the wall clock unless `now` is passed (the live
view's "updated ... ago"). The event kinds are trainer/events.py's (KINDS,
DECISIONS), shared with the writer.
"""

from advisor.dashboard.driver import Dashboard, load_state, read
from advisor.dashboard.format import axis, bar, duration, fmt, gib, sparkline
from advisor.dashboard.plain import format_event_line
from advisor.dashboard.rich_view import render
from advisor.dashboard.state import DecisionRecord, RunState, Series, worst_grad_norm

__all__ = [
    "Dashboard", "DecisionRecord", "RunState", "Series", "axis", "bar", "duration", "fmt", "format_event_line",
    "gib", "load_state", "read", "render", "sparkline", "worst_grad_norm",
]
