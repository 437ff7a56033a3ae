"""Segments as queries: the AST of `orbita.model.segments` compiled to portable Ibis
expressions (`compile`), and a plain-Python reference evaluator (`reference`) to check them."""
