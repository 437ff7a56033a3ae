SELECT
  "t2"."customer_id" AS "customer_id"
FROM (
  SELECT
    "t1"."customer_id" AS "customer_id",
    COALESCE(
      SUM(
        CASE
          WHEN JSONType("t1"."properties", 'revenue') IN ('Int64', 'UInt64', 'Double')
          THEN JSONExtractFloat("t1"."properties", 'revenue')
          ELSE NULL
        END
      ),
      0
    ) AS "value"
  FROM (
    SELECT
      *
    FROM "events" AS "t0"
    WHERE
      "t0"."type" = 'track'
      AND "t0"."name" = 'Order Completed'
      AND "t0"."timestamp" <= parseDateTimeBestEffort('2026-03-01T12:00:00+00:00', 'UTC')
  ) AS "t1"
  GROUP BY
    "t1"."customer_id"
) AS "t2"
WHERE
  "t2"."value" >= 500.0
