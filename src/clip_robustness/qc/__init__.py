"""QC stage (workflow/rules/qc.smk): our numbers against the numbers the libraries publish."""
