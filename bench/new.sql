-- What GET /movies/new?year=Y&rating=R costs the database: requireUser's
-- user lookup (store.go userByEmail), then store.newMovies (movies.go).
SELECT user_id, name, email, hashed_password FROM myapi.users WHERE email = :email;
SELECT * FROM myapi.new_movies(:year::integer, :rating::numeric);
