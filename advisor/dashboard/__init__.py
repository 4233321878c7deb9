"""The run dashboard: a state model fed by events, two views, a driver.

    events.jsonl --driver.read(offset)--> RunState.update(event)      state.py: O(1) per event, no rich
    RunState --rich_view.render(state, width, now)--> one renderable  fixed size, any run length
    event --plain.format_event_line(event)--> one log line            nohup/CI, no terminal
    format.py: sparkline, bar, fmt, duration, gib (shared by both views)
    driver.py: Dashboard (rich Live on a terminal, plain lines otherwise), load_state

The dashboard never touches the GPU: memory figures come from the events.
Nothing in a frame reads the wall clock unless `now` is passed (the live
view's "updated ... ago"). The event kinds are trainer/events.py's (KINDS,
DECISIONS), shared with the writer.
"""

from advisor.dashboard.driver import Dashboard, load_state, read
from advisor.dashboard.format import bar, duration, fmt, gib, sparkline
from advisor.dashboard.plain import format_event_line
from advisor.dashboard.rich_view import render
from advisor.dashboard.state import DecisionRecord, RunState, Series, worst_grad_norm
from trainer.events import DECISIONS, number

__all__ = [
    "DECISIONS", "Dashboard", "DecisionRecord", "RunState", "Series", "bar", "duration", "fmt", "format_event_line",
    "gib", "load_state", "number", "read", "render", "sparkline", "worst_grad_norm",
]
