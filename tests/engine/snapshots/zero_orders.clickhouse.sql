SELECT
  "t7"."customer_id" AS "customer_id"
FROM (
  SELECT
    "t3"."customer_id" AS "customer_id",
    "t6"."customer_id" AS "customer_id_right",
    "t6"."value" AS "value"
  FROM (
    SELECT
      "t0"."customer_id" AS "customer_id"
    FROM "customers" AS "t0"
  ) AS "t3"
  LEFT OUTER JOIN (
    SELECT
      "t4"."customer_id" AS "customer_id",
      COUNT(*) AS "value"
    FROM (
      SELECT
        *
      FROM "events" AS "t1"
      WHERE
        "t1"."type" = 'track'
        AND "t1"."name" = 'Order Completed'
        AND "t1"."timestamp" <= parseDateTimeBestEffort('2026-03-01T12:00:00+00:00', 'UTC')
    ) AS "t4"
    GROUP BY
      "t4"."customer_id"
  ) AS "t6"
    ON "t3"."customer_id" = "t6"."customer_id"
) AS "t7"
WHERE
  COALESCE("t7"."value", 0) = 0
