SELECT
  "t2"."customer_id" AS "customer_id"
FROM (
  SELECT
    "t1"."customer_id" AS "customer_id",
    CASE
      WHEN JSONType("t1"."properties", 'category') = 'String'
      THEN JSONExtractString("t1"."properties", 'category')
      ELSE NULL
    END AS "value",
    ROW_NUMBER() OVER (
      PARTITION BY "t1"."customer_id"
      ORDER BY "t1"."timestamp" ASC, "t1"."message_id" ASC
      ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING
    ) - 1 AS "rank"
  FROM (
    SELECT
      *
    FROM "events" AS "t0"
    WHERE
      "t0"."type" = 'track'
      AND "t0"."name" = 'Order Completed'
      AND "t0"."timestamp" <= parseDateTimeBestEffort('2026-03-01T12:00:00+00:00', 'UTC')
  ) AS "t1"
) AS "t2"
WHERE
  "t2"."rank" = 0 AND "t2"."value" = 'shoes'
