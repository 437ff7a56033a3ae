SELECT
  `t3`.`customer_id`
FROM (
  SELECT DISTINCT
    `t0`.`customer_id`
  FROM `events` AS `t0`
  WHERE
    `t0`.`type` = 'track'
    AND `t0`.`name` = 'Order Completed'
    AND `t0`.`timestamp` <= CAST('2026-03-01T12:00:00+00:00' AS TIMESTAMP)
) AS `t3`
LEFT ANTI JOIN (
  SELECT
    `t0`.`customer_id`
  FROM `events` AS `t0`
  WHERE
    `t0`.`type` = 'track'
    AND `t0`.`name` = 'Order Completed'
    AND `t0`.`timestamp` <= CAST('2026-03-01T12:00:00+00:00' AS TIMESTAMP)
    AND `t0`.`timestamp` > CAST('2026-01-30T12:00:00+00:00' AS TIMESTAMP)
) AS `t4`
  ON `t3`.`customer_id` = `t4`.`customer_id`
