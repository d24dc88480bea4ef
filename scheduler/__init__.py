"""forgejo-scheduler: one Forgejo Actions runner process for many Forgejo connections.

The pieces, in the order data flows through them: ``config`` → ``service`` →
``connection`` (one fetch loop per Forgejo) ⇄ ``pool``/``slots`` (the fair share of
runner slots) → ``task`` (one task's life: ``executor`` runs the job into its log, the
reporter sends it) → ``protocol`` (the wire).
"""

__version__ = "0.1.0"
