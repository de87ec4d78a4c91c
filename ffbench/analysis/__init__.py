"""From the record to conclusions: result tables, report building, figures, documents, merging stores,
comparing runs and the leaderboard."""
