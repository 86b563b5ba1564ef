"""The main screen: the navigation bar, the six pages in a content switcher, the footer."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import ContentSwitcher

from .evaluate import EvaluatePage
from .generate import GeneratePage
from .review import ReviewPage
from .runs import RunsPage
from .tasks import TasksPage
from .train import TrainPage
from .widgets import KeyBar, NavBar, Page

PAGE_CLASSES: dict[str, type[Page]] = {
    "tasks": TasksPage,
    "generate": GeneratePage,
    "review": ReviewPage,
    "train": TrainPage,
    "evaluate": EvaluatePage,
    "runs": RunsPage,
}


class MainScreen(Screen):
    def __init__(self, first: str = "tasks") -> None:
        super().__init__()
        self.first = first

    def compose(self) -> ComposeResult:
        yield NavBar(self.first)
        with ContentSwitcher(initial=self.first, id="pages"):
            for name, cls in PAGE_CLASSES.items():
                yield cls(id=name)
        yield KeyBar()

    def on_mount(self) -> None:
        self.page(self.first).focus_main()

    @property
    def current(self) -> str:
        return self.query_one("#pages", ContentSwitcher).current or self.first

    def page(self, name: str) -> Page:
        return self.query_one(f"#{name}", Page)

    def show(self, name: str) -> None:
        switcher = self.query_one("#pages", ContentSwitcher)
        if switcher.current == name:
            return
        switcher.current = name
        self.query_one(NavBar).set_current(name)
        page = self.page(name)
        page.focus_main()
        # hiding the old page may move the focus once more; settle it after the refresh
        self.call_after_refresh(page.focus_main)
        page.on_page_shown()
