"""The Textual TUI. Only this package imports Textual; the core (sgtui.*) never does."""
