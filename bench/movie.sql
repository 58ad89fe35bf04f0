-- The query of GET /movies/?movie_id=N (store.movie in movies.go), for pgbench.
SELECT movie_id, title, released, rating FROM myapi.movies WHERE movie_id = :id;
