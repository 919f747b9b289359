-- `casebase demo` prints this (step 6) with {query} filled in: its search and brief in SQL.
SELECT rank, study_id, round(distance::numeric, 4) AS distance, age, sex, flags
FROM casebase.similar_cases('{query}', k => 50, age_min => 30, age_max => 90,
                            exclude_flags => ARRAY['portable']);

SELECT f.finding, count(*) FILTER (WHERE f.status = 'present') AS present,
       array_agg(s.study_id) FILTER (WHERE f.status = 'present') AS study_ids
FROM casebase.similar_cases('{query}', k => 50, age_min => 30, age_max => 90,
                            exclude_flags => ARRAY['portable']) s
JOIN casebase.findings f USING (study_id)
GROUP BY f.finding ORDER BY present DESC;
