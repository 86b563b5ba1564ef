"""The Evaluate screen: a before/after table per metric (Store.evals), and base vs fine-tuned
predictions side by side per sample (Store.eval_items), changed ones marked and filterable."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import DataTable, Static

from ..evaluation import which_model
from ..store import Store
from .messages import Loaded
from .widgets import Page, short

BASE = "base"
# the fine-tuned model's system name: `sgtui eval` calls it self-guide
TUNED = ("self-guide", "fine-tuned", "finetuned", "tuned")
ORDER = {"base": 0, "self-guide": 1, "fine-tuned": 1, "self-icl": 2, "trivial": 3}


def pick_tuned(systems: list[str]) -> str | None:
    for s in systems:
        if s in TUNED:
            return s
    others = [s for s in systems if s not in (BASE, "trivial")]
    return others[0] if others else None


def score_table(evals: list[dict]) -> tuple[list[str], list[tuple[str, str, dict[str, float]]]]:
    """(systems, [(split, metric, {system: score})]); the latest evaluation of each wins."""
    systems: list[str] = []
    table: dict[tuple[str, str], dict[str, float]] = {}
    for e in evals:
        if e["system"] not in systems:
            systems.append(e["system"])
        table.setdefault((e["split"] or "", e["metric"]), {})[e["system"]] = e["score"]
        for name, value in (e.get("scores") or {}).items():
            if name != e["metric"] and isinstance(value, (int, float)):
                table.setdefault((e["split"] or "", name), {})[e["system"]] = float(value)
    systems.sort(key=lambda s: (ORDER.get(s, 9), s))
    return systems, [(split, metric, v) for (split, metric), v in table.items()]


def verdict(base: dict, tuned: dict) -> Text:
    """One line under the head: which model to use on this split, in the words `sgtui run`
    ends with, red where the fine-tune is worse than its base."""
    b, t = base["score"], tuned["score"]
    style = "bold green" if t > b else "bold red" if t < b else "bold yellow"
    return Text.assemble(
        "\n", (f"{base['split'] or '?'} · {base['metric']}: ", "dim"), (which_model(b, t), style)
    )


class EvaluatePage(Page):
    PAGE = "evaluate"
    MAIN = "#eval-items"
    BINDINGS = [
        Binding(
            "c",
            "changed",
            "Changed only",
            tooltip="show only samples whose answer changed after fine-tuning",
        ),
        Binding(
            "n",
            "next_pair",
            "Next split",
            tooltip="next split or metric with both base and fine-tuned results",
        ),
    ]

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self.run_id: int | None = None
        self.evals: list[dict] = []
        self.pairs: list[tuple[dict, dict]] = []
        self.pair_index = 0
        self.joined: list[list[dict]] = []
        self.changed_only = False

    def compose_page(self) -> ComposeResult:
        yield Static(id="eval-head")
        yield DataTable(id="eval-scores", cursor_type="row", show_cursor=False)
        yield Static(id="eval-items-title")
        yield DataTable(id="eval-items", cursor_type="row", zebra_stripes=True)
        yield Static(id="eval-input")
        with Horizontal(id="eval-detail"):
            with VerticalScroll():
                yield Static(id="eval-base")
            with VerticalScroll():
                yield Static(id="eval-tuned")

    def on_mount(self) -> None:
        items = self.query_one("#eval-items", DataTable)
        for key, label, width in (
            ("idx", "#", 4),
            ("delta", "Δ", 5),
            ("gold", "gold", 18),
            ("base", "base", 21),
            ("tuned", "fine-tuned", 21),
        ):
            items.add_column(label, key=key, width=width)
        self.sg.selection.subscribe(self, self._on_selection)
        self.show_run(self.sg.current_run_id)

    def _on_selection(self, what: str) -> None:
        if what == "run" and self.sg.current_run_id != self.run_id:
            self.show_run(self.sg.current_run_id)

    def on_page_shown(self) -> None:
        if self.run_id is not None:
            self.load(self.run_id)  # an evaluation may have finished meanwhile

    def show_run(self, run_id: int | None) -> None:
        self.run_id = run_id
        self.evals, self.pairs, self.joined = [], [], []
        if run_id is not None:
            self.load(run_id)
        self._refresh_view()

    @work(thread=True, exclusive=True, exit_on_error=False, group="evaluate-load")
    def load(self, run_id: int) -> None:
        store = Store(self.sg.db_path)
        try:
            evals = store.evals(run_id)
            pairs = []
            latest: dict[tuple[str, str, str], dict] = {}
            for e in evals:
                latest[(e["split"] or "", e["metric"], e["system"])] = e
            for (split, metric, system), e in latest.items():
                if system != BASE:
                    continue
                tuned = pick_tuned([s for (sp, m, s) in latest if (sp, m) == (split, metric)])
                if tuned:
                    pairs.append((e, latest[(split, metric, tuned)]))
            joined = [self._join(store, b, t) for b, t in pairs]
            self.post_message(Loaded("evals", (evals, pairs, joined), run_id))
        finally:
            store.close()

    @staticmethod
    def _join(store: Store, base: dict, tuned: dict) -> list[dict]:
        b = {r["idx"]: r for r in store.eval_items(base["id"])}
        t = {r["idx"]: r for r in store.eval_items(tuned["id"])}
        out = []
        for idx in sorted(set(b) | set(t)):
            rb, rt = b.get(idx, {}), t.get(idx, {})
            out.append(
                {
                    "idx": idx,
                    "input": rb.get("input") or rt.get("input") or "",
                    "gold": rb.get("gold") or rt.get("gold") or "",
                    "base": rb.get("prediction") or "",
                    "tuned": rt.get("prediction") or "",
                    "base_score": rb.get("score"),
                    "tuned_score": rt.get("score"),
                }
            )
        return out

    def on_loaded(self, message: Loaded) -> None:
        if message.what == "evals" and message.key == self.run_id:
            self.evals, self.pairs, self.joined = message.data  # type: ignore[misc]
            self.pair_index = min(self.pair_index, max(len(self.pairs) - 1, 0))
            self._refresh_view()

    # -- display ------------------------------------------------------------------------------
    def _refresh_view(self) -> None:
        head = Text()
        if self.run_id is None:
            head.append("No run yet.", style="bold")
        elif not self.evals:
            head.append(f"run {self.run_id}: no evaluation yet. ", style="bold")
            head.append(
                f"After training, run `sgtui eval --run {self.run_id}` (with the adapter); "
                "the results appear here.",
                style="dim",
            )
        else:
            head.append(f"run {self.run_id} · {len(self.evals)} evaluations", style="bold")
            for base, tuned in self.pairs:
                head.append_text(verdict(base, tuned))
        self.query_one("#eval-head", Static).update(head)
        self._render_scores()
        self._render_items()

    def _render_scores(self) -> None:
        table = self.query_one("#eval-scores", DataTable)
        table.clear(columns=True)
        systems, rows = score_table(self.evals)
        if not rows:
            table.display = False
            return
        table.display = True
        tuned = pick_tuned(systems)
        table.add_column("split", width=12)
        table.add_column("metric", width=12)
        for s in systems:
            table.add_column(s, width=max(len(s), 7))
        if tuned and BASE in systems:
            table.add_column("Δ", width=7)
        for split, metric, scores in rows:
            cells: list = [short(split, 12), short(metric, 12)]
            cells += [f"{scores[s]:.1f}" if s in scores else "–" for s in systems]
            if tuned and BASE in systems:
                if tuned in scores and BASE in scores:
                    d = scores[tuned] - scores[BASE]
                    cells.append(
                        Text(f"{d:+.1f}", style="green" if d > 0 else "red" if d < 0 else "")
                    )
                else:
                    cells.append("–")
            table.add_row(*cells)

    def _shown_items(self) -> list[dict]:
        if not self.pairs:
            return []
        items = self.joined[self.pair_index]
        if self.changed_only:
            items = [i for i in items if i["base"].strip() != i["tuned"].strip()]
        return items

    def _render_items(self) -> None:
        title = self.query_one("#eval-items-title", Static)
        table = self.query_one("#eval-items", DataTable)
        table.clear()
        if not self.pairs:
            title.update("")
            self._render_detail()
            return
        base, tuned = self.pairs[self.pair_index]
        items = self._shown_items()
        n_changed = sum(
            1 for i in self.joined[self.pair_index] if i["base"].strip() != i["tuned"].strip()
        )
        title.update(
            Text.assemble(
                ("per sample ", "bold"),
                f"{base['split'] or '?'} · {base['metric']} · ",
                (f"{n_changed} changed", "yellow"),
                f" of {len(self.joined[self.pair_index])}",
                (
                    "  (c: changed only" + (" ✓" if self.changed_only else "") + ", n: next split)",
                    "dim",
                ),
            )
        )
        for it in items:
            changed = it["base"].strip() != it["tuned"].strip()
            d = (it["tuned_score"] or 0) - (it["base_score"] or 0)
            style = "green" if d > 0 else "red" if d < 0 else ("yellow" if changed else "dim")
            table.add_row(
                str(it["idx"]),
                Text(f"{d:+.0f}" if changed or d else "=", style=style),
                short(it["gold"], 18),
                Text(short(it["base"], 21)),
                Text(short(it["tuned"], 21), style=style if changed else ""),
                key=str(it["idx"]),
            )
        self._render_detail()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "eval-items":
            self._render_detail()

    def _render_detail(self) -> None:
        base_box = self.query_one("#eval-base", Static)
        tuned_box = self.query_one("#eval-tuned", Static)
        table = self.query_one("#eval-items", DataTable)
        items = {str(i["idx"]): i for i in self._shown_items()}
        input_box = self.query_one("#eval-input", Static)
        if not table.row_count:
            for box in (input_box, base_box, tuned_box):
                box.update("")
            return
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        it = items.get(str(key))
        if it is None:
            return
        tuned_name = self.pairs[self.pair_index][1]["system"]
        input_box.update(
            Text.assemble(
                (f"#{it['idx']} ", "bold"),
                short(it["input"], 150),
                ("  gold: ", "bold"),
                (short(it["gold"], 60), "green"),
            )
        )
        base_box.update(
            Text.assemble(("base", "bold"), f" (score {it['base_score']})\n", it["base"])
        )
        tuned_box.update(
            Text.assemble((tuned_name, "bold"), f" (score {it['tuned_score']})\n", it["tuned"])
        )

    def action_changed(self) -> None:
        self.changed_only = not self.changed_only
        self._render_items()

    def action_next_pair(self) -> None:
        if self.pairs:
            self.pair_index = (self.pair_index + 1) % len(self.pairs)
            self._render_items()
