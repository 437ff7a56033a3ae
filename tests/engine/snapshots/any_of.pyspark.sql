SELECT
  *
FROM (
  SELECT
    `t3`.`customer_id`
  FROM (
    SELECT
      *
    FROM `customers` AS `t1`
    WHERE
      FROM_JSON(`t1`.`traits`, 'struct<`vip`: boolean>').`vip` = TRUE
  ) AS `t3`
) AS `t4`
UNION
SELECT
  *
FROM (
  SELECT DISTINCT
    `t0`.`customer_id`
  FROM `events` AS `t0`
  WHERE
    `t0`.`type` = 'track'
    AND `t0`.`name` = 'Order Completed'
    AND `t0`.`timestamp` <= CAST('2026-03-01T12:00:00+00:00' AS TIMESTAMP)
    AND `t0`.`timestamp` > CAST('2026-02-15T12:00:00+00:00' AS TIMESTAMP)
) AS `t2`
