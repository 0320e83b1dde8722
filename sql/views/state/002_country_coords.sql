-- Reference data for the impossible-travel rule: a point near the population centre
-- of each country (latitude, longitude in degrees). A country missing here cannot
-- be judged: transactions there never raise an impossible-travel alert.
CREATE TABLE IF NOT EXISTS live.country_coords (
    country VARCHAR PRIMARY KEY,
    lat     DOUBLE NOT NULL,
    lon     DOUBLE NOT NULL
);

INSERT INTO live.country_coords VALUES
    ('DE', 51.0, 10.0),
    ('FR', 46.6, 2.4),
    ('NL', 52.2, 5.3),
    ('BE', 50.6, 4.6),
    ('AT', 47.6, 14.1),
    ('ES', 40.4, -3.7),
    ('IT', 42.8, 12.6),
    ('PT', 39.6, -8.0),
    ('PL', 52.1, 19.4),
    ('IE', 53.3, -7.7),
    ('GR', 39.1, 22.9),
    ('HR', 45.1, 15.2),
    ('GB', 52.6, -1.5),
    ('US', 39.8, -98.6),
    ('BR', -14.2, -51.9),
    ('TH', 15.9, 100.9),
    ('JP', 36.2, 138.3),
    ('ZA', -30.6, 22.9),
    ('NG', 9.1, 8.7),
    ('IN', 21.1, 78.0),
    ('MX', 23.6, -102.6),
    ('AU', -25.3, 133.8)
ON CONFLICT (country) DO UPDATE SET lat = excluded.lat, lon = excluded.lon;
