"""diffjax: diffusion models in JAX.

Time runs from t=0 (data) to t=1 (noise); x_t = alpha(t) x0 + sigma(t) eps.
"""
