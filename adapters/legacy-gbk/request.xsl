<?xml version="1.0" encoding="UTF-8"?>
<!-- The legacy-gbk dialect's <input> message (input.xsd) to the canonical request (settlement.soap.canonical).
     $operation (from the trade code, manifest.yaml) chooses the fields: the canonical request of each operation has
     exactly the fields REST accepts, nothing more. Codes are translated (level, scheme, payment category; unknown
     codes pass through for the service to answer), dates YYYYMMDD become ISO dates, the handling time
     YYYYMMDDHHMMSS (Beijing time) an ISO date-time with +08:00. Amounts, prices and quantities are copied as the
     hospital wrote them: nothing is computed here. Empty elements become empty leaves, which are absent fields. -->
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:output method="xml" encoding="UTF-8"/>
  <xsl:param name="code"/>
  <xsl:param name="operation"/>

  <!-- The service maps a message before its schema check (so that even a refused message's patient name is known
       to the masking of the envelope log): whatever the root is called, one <request> comes out, and a root other
       than <input> is then refused by input.xsd as MESSAGE_INVALID. -->
  <xsl:template match="/">
    <xsl:for-each select="*">
      <request>
        <xsl:choose>
          <xsl:when test="$operation = 'eligibility'">
            <id_number><xsl:value-of select="normalize-space(prm_aac002)"/></id_number>
            <on>
              <xsl:call-template name="date">
                <xsl:with-param name="value" select="substring(normalize-space(prm_aae036), 1, 8)"/>
              </xsl:call-template>
            </on>
          </xsl:when>
          <xsl:when test="$operation = 'quote'">
            <xsl:call-template name="claim"/>
          </xsl:when>
          <xsl:when test="$operation = 'settle'">
            <transaction_id><xsl:value-of select="normalize-space(prm_msgid)"/></transaction_id>
            <quote_id><xsl:value-of select="normalize-space(prm_quoteid)"/></quote_id>
            <xsl:call-template name="claim"/>
          </xsl:when>
          <xsl:when test="$operation = 'reverse'">
            <transaction_id><xsl:value-of select="normalize-space(prm_msgid)"/></transaction_id>
            <settlement_id><xsl:value-of select="normalize-space(prm_yka103)"/></settlement_id>
            <reason><xsl:value-of select="normalize-space(prm_aae013)"/></reason>
          </xsl:when>
          <xsl:when test="$operation = 'cancel'">
            <transaction_id><xsl:value-of select="normalize-space(prm_msgid)"/></transaction_id>
            <original_transaction_id><xsl:value-of select="normalize-space(prm_omsgid)"/></original_transaction_id>
            <reason><xsl:value-of select="normalize-space(prm_aae013)"/></reason>
          </xsl:when>
          <xsl:when test="$operation = 'get'">
            <settlement_id><xsl:value-of select="normalize-space(prm_yka103)"/></settlement_id>
          </xsl:when>
        </xsl:choose>
      </request>
    </xsl:for-each>
  </xsl:template>

  <xsl:template name="claim">
    <claim>
      <hospital>
        <code><xsl:value-of select="normalize-space(prm_akb020)"/></code>
        <level>
          <xsl:call-template name="lookup">
            <xsl:with-param name="value" select="normalize-space(prm_aka101)"/>
            <xsl:with-param name="table" select="'|1=township|2=county|3=city|4=provincial|'"/>
          </xsl:call-template>
        </level>
        <name><xsl:value-of select="normalize-space(prm_akb021)"/></name>
      </hospital>
      <visit>
        <id><xsl:value-of select="normalize-space(prm_akc190)"/></id>
        <type>
          <xsl:call-template name="lookup">
            <xsl:with-param name="value" select="normalize-space(prm_aka130)"/>
            <xsl:with-param name="table" select="'|11=outpatient|14=chronic_outpatient|21=inpatient|'"/>
          </xsl:call-template>
        </type>
        <admission_date>
          <xsl:call-template name="date"><xsl:with-param name="value" select="normalize-space(prm_akc192)"/></xsl:call-template>
        </admission_date>
        <discharge_date>
          <xsl:call-template name="date"><xsl:with-param name="value" select="normalize-space(prm_akc194)"/></xsl:call-template>
        </discharge_date>
        <settled_at>
          <xsl:call-template name="beijing-time"><xsl:with-param name="value" select="normalize-space(prm_aae036)"/></xsl:call-template>
        </settled_at>
      </visit>
      <patient>
        <id_number><xsl:value-of select="normalize-space(prm_aac002)"/></id_number>
        <name><xsl:value-of select="normalize-space(prm_aac003)"/></name>
        <scheme>
          <xsl:call-template name="lookup">
            <xsl:with-param name="value" select="normalize-space(prm_aae140)"/>
            <xsl:with-param name="table" select="'|310=employee|390=resident|'"/>
          </xsl:call-template>
        </scheme>
        <region><xsl:value-of select="normalize-space(prm_aab301)"/></region>
      </patient>
      <lines>
        <xsl:for-each select="feedetail/row">
          <item>
            <id>
              <xsl:choose>
                <xsl:when test="normalize-space(prm_yka105) != ''"><xsl:value-of select="normalize-space(prm_yka105)"/></xsl:when>
                <xsl:otherwise><xsl:value-of select="position()"/></xsl:otherwise>
              </xsl:choose>
            </id>
            <code><xsl:value-of select="normalize-space(prm_ake001)"/></code>
            <name><xsl:value-of select="normalize-space(prm_ake002)"/></name>
            <quantity><xsl:value-of select="normalize-space(prm_akc226)"/></quantity>
            <unit_price><xsl:value-of select="normalize-space(prm_akc225)"/></unit_price>
            <amount><xsl:value-of select="normalize-space(prm_akc227)"/></amount>
          </item>
        </xsl:for-each>
      </lines>
      <total><xsl:value-of select="normalize-space(prm_akc264)"/></total>
    </claim>
  </xsl:template>

  <!-- A code through a table '|code=value|...|'; an unknown code is passed through unchanged. -->
  <xsl:template name="lookup">
    <xsl:param name="value"/>
    <xsl:param name="table"/>
    <xsl:variable name="key" select="concat('|', $value, '=')"/>
    <xsl:choose>
      <xsl:when test="$value != '' and contains($table, $key)">
        <xsl:value-of select="substring-before(substring-after($table, $key), '|')"/>
      </xsl:when>
      <xsl:otherwise><xsl:value-of select="$value"/></xsl:otherwise>
    </xsl:choose>
  </xsl:template>

  <!-- YYYYMMDD to YYYY-MM-DD (anything else is passed through for the service to refuse). -->
  <xsl:template name="date">
    <xsl:param name="value"/>
    <xsl:choose>
      <xsl:when test="string-length($value) = 8 and translate($value, '0123456789', '') = ''">
        <xsl:value-of select="concat(substring($value, 1, 4), '-', substring($value, 5, 2), '-', substring($value, 7, 2))"/>
      </xsl:when>
      <xsl:otherwise><xsl:value-of select="$value"/></xsl:otherwise>
    </xsl:choose>
  </xsl:template>

  <!-- YYYYMMDDHHMMSS, Beijing time, to YYYY-MM-DDTHH:MM:SS+08:00. -->
  <xsl:template name="beijing-time">
    <xsl:param name="value"/>
    <xsl:choose>
      <xsl:when test="string-length($value) = 14 and translate($value, '0123456789', '') = ''">
        <xsl:value-of select="concat(substring($value, 1, 4), '-', substring($value, 5, 2), '-', substring($value, 7, 2),
                                     'T', substring($value, 9, 2), ':', substring($value, 11, 2), ':',
                                     substring($value, 13, 2), '+08:00')"/>
      </xsl:when>
      <xsl:otherwise><xsl:value-of select="$value"/></xsl:otherwise>
    </xsl:choose>
  </xsl:template>
</xsl:stylesheet>
