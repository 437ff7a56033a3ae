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
      IF(
        GET_JSON_OBJECT(`t1`.`traits`, '$.vip') IN ('true', 'false'),
        GET_JSON_OBJECT(`t1`.`traits`, '$.vip') = 'true',
        NULL
      ) = TRUE
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
