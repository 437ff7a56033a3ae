SELECT DISTINCT
  `t0`.`customer_id`
FROM `rfm_cells` AS `t0`
WHERE
  `t0`.`cell` = 'champions'
