-- Sample rows for the dev database, so that a fresh clone has something to
-- serve; the OpenAPI examples are replayed against them too. Loaded after
-- schema.sql when MYAPI_ENV is dev, never in production, so each statement
-- must be idempotent (ON CONFLICT DO NOTHING).

INSERT INTO myapi.movies (movie_id, title, released, rating) VALUES
    (1, 'The Shawshank Redemption', 1994, 9.2),
    (2, 'The Godfather', 1972, 9.2),
    (3, 'The Dark Knight', 2008, 9.0),
    (4, 'The Godfather Part II', 1974, 9.0),
    (5, '12 Angry Men', 1957, 9.0),
    (6, 'Schindler''s List', 1993, 9.0),
    (7, 'Pulp Fiction', 1994, 8.9),
    (8, 'Inception', 2010, 8.8)
ON CONFLICT (movie_id) DO NOTHING;
