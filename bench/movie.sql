-- What GET /movies/?movie_id=N costs the database: requireUser's user
-- lookup (store.go userByEmail), then store.movie (movies.go).
SELECT user_id, name, email, hashed_password FROM myapi.users WHERE email = :email;
SELECT movie_id, title, released, rating FROM myapi.movies WHERE movie_id = :movie_id;
