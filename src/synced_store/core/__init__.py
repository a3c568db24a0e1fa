"""Sans-I/O core: the sync engine's logic, with no event loop, sockets, database or clock.

Modules: ``keys`` (namespaces and limits), ``store`` (ordered in-memory rows), ``readset``
(what a query or mutation read), ``context`` (mutation / read contexts and table handles over a
transaction), ``sequencing`` (the lastMutationID rule), ``patch`` (wire patch ops and append
deltas), ``client_engine`` (optimistic mutations, rebase, subscriptions).
"""
