"""HTTP views on the worker's web port: recommendations, item replicas and Prometheus metrics."""

from __future__ import annotations


import faust
from faust.web import Request, Response, View

from streamrec.streams.pipeline import Pipeline


def register_views(app: faust.App, pipeline: Pipeline) -> None:
    """Add ``GET /recommendations/{user}``, ``GET /items/{item}`` and ``GET /metrics`` to the worker's web server."""

    @app.page("/recommendations/{user}")
    @app.table_route(table=pipeline.users, match_info="user")
    async def recommendations(web: View, request: Request, user: str) -> Response:
        """The user's top-K as JSON, answered by the worker that owns the user's partition.

        Query parameter ``k`` (1 to ``model.max_k``) overrides the configured K.
        """
        max_k = pipeline.settings.model.max_k
        try:
            k = int(request.query.get("k", pipeline.settings.model.k))
            if not 1 <= k <= max_k:
                raise ValueError
        except ValueError:
            return web.json({"error": f"k must be an integer from 1 to {max_k}"}, status=400)
        await pipeline.ready()
        recommendation = pipeline.recommend(user, k, trigger="request")
        return web.bytes(recommendation.to_json(), content_type="application/json")

    @app.page("/items/{item}")
    async def item(web: View, request: Request, item: str) -> Response:
        """This worker's replica of one item (what it scores with): popularity, vector, co-visits.

        Every worker answers from its own replica, so comparing workers shows replication freshness.
        """
        vector = pipeline.catalog.vector(item)
        if vector is None:
            return web.json({"error": f"item {item!r} is not in this worker's catalogue"}, status=404)
        neighbours, weights = pipeline.catalog.neighbours(item)
        return web.json({"item_id": item, "popularity": pipeline.catalog.score(item), "vector": vector.tolist(),
                         "neighbours": dict(zip(neighbours, weights, strict=True))})

    @app.page("/metrics")
    async def metrics(web: View, request: Request) -> Response:
        """Prometheus text exposition of this worker's metrics."""
        return web.bytes(pipeline.metrics.render(), content_type="text/plain; version=0.0.4")

