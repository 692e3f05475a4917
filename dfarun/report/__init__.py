"""From records to the paper's tables and figures, and to summaries of any store."""
