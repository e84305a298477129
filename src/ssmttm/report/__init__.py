"""The report stage: one portable HTML page with the paper-style table, figures, audio and a listening test."""
